"""Tests of the local service stand-ins in monitor/sandbox/."""
