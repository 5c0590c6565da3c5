"""/metrics as a scraper reads it: alert outbox rows by status (suppressed too) and the monitor's
own conditions by kind and state, counted from the registry at each scrape, zeros before any."""

from __future__ import annotations

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from monitor.conditions import SCOPE_FAILING, SOURCE_UNREACHABLE
from monitor.metrics import Metrics, serve
from monitor.records import EventStatus, NewEvent, Verdict
from monitor.registry import Registry
from tests.alert.conftest import add_model


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{family: {sorted label pairs: value}} for the registry-counted families."""
    text = httpx2.get(f"{url}/metrics", timeout=5).text
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)
            if f.name in ("monitor_alerts", "monitor_conditions")}


def _observe(reg: Registry, kind: str, subject: str, *, failing: bool, parent: str | None = None):
    return reg.observe_condition(kind, subject, failing=failing, detail="x", fire_after=2,
                                 channels=["slack"], actor="test", parent=parent)


def test_alerts_and_conditions_are_counted_at_each_scrape(tmp_path):
    db = tmp_path / "r.db"
    server = serve("127.0.0.1:0", Metrics(db), lambda: (True, {}))
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        before = _scrape(url)  # no registry file yet: every known series, at zero
        assert before["monitor_alerts"] == {(("status", s),): 0.0 for s in
                                            ("pending", "delivered", "failed", "suppressed")}
        assert len(before["monitor_conditions"]) == 6 and not any(before["monitor_conditions"].values())

        with Registry.open(db) as reg:
            model = add_model(reg)
            event, _ = reg.record_event(NewEvent(model.id, model.name, "hf://a/b", Verdict.EXACT, 1.0,
                                                 "high", None, {}), actor="test", channels=["slack"])
            reg.set_event_status(event.id, EventStatus.FALSE_POSITIVE, actor="test")  # before it went
            for _ in range(2):  # fire_after=2: the second failing run fires
                _observe(reg, SOURCE_UNREACHABLE, "hf_hub", failing=True)
            _observe(reg, SCOPE_FAILING, "hf_hub/a", failing=True)  # pending
            for failing in (True, False):  # pending, then resolved without firing
                _observe(reg, SCOPE_FAILING, "hf_hub/b", failing=failing)

        after = _scrape(url)
    finally:
        server.shutdown()
        server.server_close()
    alerts = {labels[0][1]: n for labels, n in after["monitor_alerts"].items()}
    # the event's trigger was suppressed when it closed; its resolve (decided at delivery) and the
    # source's trigger are pending
    assert alerts == {"pending": 2.0, "delivered": 0.0, "failed": 0.0, "suppressed": 1.0}
    conditions = {(dict(k)["kind"], dict(k)["state"]): n for k, n in after["monitor_conditions"].items()}
    assert conditions == {
        (SOURCE_UNREACHABLE, "pending"): 0.0, (SOURCE_UNREACHABLE, "firing"): 1.0,
        (SOURCE_UNREACHABLE, "resolved"): 0.0, (SCOPE_FAILING, "pending"): 1.0,
        (SCOPE_FAILING, "firing"): 0.0, (SCOPE_FAILING, "resolved"): 1.0}
