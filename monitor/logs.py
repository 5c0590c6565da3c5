"""Logging set-up from [log]: plain text for a terminal, one JSON object per line for journald
and log shippers. Secrets never reach a log record: settings hold them as SecretStr.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from monitor.config import LogSettings


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people reading a terminal or journal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{super().format(record)} {extras}".rstrip()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with any `extra=` fields the caller attached."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
               "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        doc.update(_extras(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure(settings: LogSettings) -> None:
    """Route the `monitor` logger to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    logger = logging.getLogger("monitor")
    logger.handlers[:] = [handler]
    logger.setLevel(settings.level.upper())
    logger.propagate = False
