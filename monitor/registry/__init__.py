"""The SQLite registry: registered models, crawl state, events, the alert outbox, the audit log."""

from monitor.registry.schema import SCHEMA_VERSION
from monitor.registry.store import Registry

__all__ = ["Registry", "SCHEMA_VERSION"]
