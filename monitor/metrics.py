"""What `monitor daemon` exposes on its local port: /healthz and Prometheus /metrics.

prometheus-client does the exposition; this module only names the series and serves them next
to a health answer from one small WSGI app on a daemon thread (the standard library's wsgiref:
one scrape at a time is all a local port needs). Alert and condition counts are read from the
registry at scrape time through a connection of the scrape's own, so they are never stale.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily

from monitor.errors import ConfigError
from monitor.records import ConditionKind, ConditionState, OutboxStatus

_CONDITION_KINDS = tuple(k.value for k in ConditionKind)


class Metrics:
    """The daemon's series, in a registry of their own (no process-global state)."""

    def __init__(self, db_path: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.last_success = Gauge("monitor_job_last_success_timestamp_seconds",
                                  "Unix time the job last finished without error", ["job"], registry=r)
        self.last_duration = Gauge("monitor_job_last_duration_seconds", "Duration of the job's last run",
                                   ["job"], registry=r)
        self.runs = Counter("monitor_job_runs", "Job runs by outcome (ok, error, busy)",
                            ["job", "outcome"], registry=r)
        self.candidates = Counter("monitor_candidates", "Candidates triaged, by outcome status",
                                  ["crawler", "status"], registry=r)
        self.matches = Counter("monitor_matches", "Matches found, by verdict", ["crawler", "verdict"],
                               registry=r)
        self.bytes_read = Counter("monitor_weight_bytes_read", "Weight-file bytes fetched",
                                  ["crawler"], registry=r)
        r.register(_RegistryCollector(db_path))


class _RegistryCollector:
    """Counted at scrape from the registry, through a read-only connection of the scrape's own:

    monitor_alerts{status}: outbox rows pending / delivered / failed / suppressed;
    monitor_conditions{kind,state}: the monitor's own conditions, pending / firing / resolved.
    Every known label set is always present (0 when empty), so an alert rule sees 0, not absence.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        alerts = dict.fromkeys((s.value for s in OutboxStatus), 0)
        conditions = dict.fromkeys(((k, s.value) for k in _CONDITION_KINDS for s in ConditionState), 0)
        try:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1) as db:
                alerts.update(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
                conditions.update(((kind, state), n) for kind, state, n in db.execute(
                    "SELECT kind, state, count(*) FROM conditions GROUP BY kind, state"))
        except sqlite3.Error:
            pass  # no registry yet, an older schema, or busy: report zeros rather than fail the scrape
        family = GaugeMetricFamily("monitor_alerts", "Alert outbox rows by status", labels=["status"])
        for status, n in alerts.items():
            family.add_metric([status], n)
        yield family
        family = GaugeMetricFamily("monitor_conditions", "The monitor's own conditions by kind and state",
                                   labels=["kind", "state"])
        for (kind, state), n in sorted(conditions.items()):
            family.add_metric([kind, state], n)
        yield family


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def serve(listen: str, metrics: Metrics, health: Callable[[], tuple[bool, dict]]) -> WSGIServer:
    """Start /healthz and /metrics on `listen` ("host:port") in a daemon thread."""
    host, _, port = listen.rpartition(":")
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            ok, detail = health()
            body = json.dumps({"status": "ok" if ok else "unavailable", **detail}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return prometheus(environ, start_response)

    try:
        server = make_server(host, int(port), app, handler_class=_Quiet)
    except OSError as e:
        raise ConfigError("daemon.listen", listen, f"cannot listen: {e.strerror or e}") from None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
