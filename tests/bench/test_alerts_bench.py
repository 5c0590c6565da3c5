"""The alert benchmark's harness on a small run: its three phases are counted on the servers'
side, and a duplicate or a loss would show (the full run is in docs/BENCHMARKS.md)."""

from benchmarks.alerts import run


def test_every_phase_arrives_exactly_once_under_failure():
    result = run(events=12, fail_rate=0.3, seed=3)
    assert result["injected_failures"] > 0
    assert {k: v["received"] for k, v in result["channels"].items()} == {
        "trigger → slack": 12, "trigger → pagerduty": 12, "repeat → slack": 12,
        "repeat → pagerduty": 12, "resolve → slack": 6, "resolve → pagerduty": 6}
    assert result["exactly_once"] and result["outbox"] == {"delivered": 60}
