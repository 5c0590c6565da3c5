"""provenance-monitor: finds stolen copies of the machine-learning models you own."""

__version__ = "0.1.0"
