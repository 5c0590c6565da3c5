"""Source plugins that discover candidate weight files (Hugging Face Hub, GitHub releases, URL
lists). Each implements one interface and is found through the entry-point group
``provenance_monitor.crawlers``; the crawler issue fills this package.
"""
