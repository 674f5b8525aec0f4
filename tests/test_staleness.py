"""Staleness markers in the evaluator: a series ends at the marker's ts, as in Prometheus."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.ruletest import STALE, expand_values
from flarebus.events import MetricSample, stale_marker, trigger_decoder
from tests.support import lines, run_flarebus, system_binary
from tests.test_evaluator import rule, rules, run, s


def samples(pairs: str) -> list[MetricSample]:
    """'0:9 5:S' -> samples of m, S being a staleness marker."""
    out = []
    for t, v in (p.split(":") for p in pairs.split()):
        out.append(stale_marker("m", float(t)) if v == "S" else s(float(t), float(v)))
    return out


# (rule fields, samples "ts:value ..." with S a marker, until, expected [(state, at)])
TABLE = [
    # resolve (the default): a firing series resolves at the marker, not at last + after
    ({}, "0:9 5:S", 1000.0, [("firing", 0.0), ("resolved", 5.0)]),
    # ... without waiting out keep_firing_for
    ({"keep_firing_for": "30s"}, "0:9 5:S", 1000.0, [("firing", 0.0), ("resolved", 5.0)]),
    # a pending series is dropped: `for` never completes
    ({"for": "10s"}, "0:9 5:S", 1000.0, []),
    # a marker exactly at the `for` deadline is applied first (a sample at T before a timer)
    ({"for": "10s"}, "0:9 10:S", 1000.0, []),
    # the series starts over with its next sample
    ({}, "0:9 5:S 6:9", None, [("firing", 0.0), ("resolved", 5.0), ("firing", 6.0)]),
    # keep: the last value holds: pending still fires, firing keeps firing
    ({"for": "10s", "missing": "{after: 1m, then: keep}"}, "0:9 5:S", 1000.0,
     [("firing", 10.0)]),
    ({"missing": "{after: 1m, then: keep}"}, "0:9 5:S", 1000.0, [("firing", 0.0)]),
    # fire: the end fires at once (not at last + after); the next sample resolves it
    ({"missing": "{after: 1m, then: fire}"}, "0:1 5:S 9:1", None,
     [("firing", 5.0), ("resolved", 9.0)]),
    # fire on a series already firing: it just keeps firing, no second trigger
    ({"missing": "{after: 1m, then: fire}"}, "0:9 5:S", 30.0, [("firing", 0.0)]),
    # a marker older than the series' newest sample is out of order: dropped
    ({}, "0:9 5:9 3:S", 30.0, [("firing", 0.0)]),
    # a marker for a series never seen starts nothing
    ({}, "5:S 6:1", 1000.0, []),
]


@pytest.mark.parametrize(("fields", "pairs", "until", "expected"), TABLE)
def test_marker_table(fields: dict[str, str], pairs: str, until: float | None,
                      expected: list[tuple[str, float]]) -> None:
    """Each missing.then mode at a staleness marker, as at missing.after running out."""
    assert run(rule(**fields), samples(pairs), until) == expected


def test_a_marker_forgets_the_series_and_its_stored_state() -> None:
    """After the marker nothing of the series is tracked, and its checkpoint key is deleted."""
    ev = Evaluator(rule(**{"for": "10s"}))
    ev.ingest([s(0.0, 9.0)], now=0.0)
    key = next(iter(ev.take_dirty()))
    ev.ingest([stale_marker("m", 5.0)], now=5.0)
    assert ev.stats().series == 0
    assert ev.take_dirty() == {key: None}
    assert ev.next_deadline() is None


def test_a_marker_ends_only_its_own_series_and_every_stage() -> None:
    """Another series of the batch is untouched; an escalation stage resolves with the base."""
    ev = Evaluator(rules("  - {name: r, metric: m, when: '> 5', "
                         "escalate: [{when: '> 8', severity: critical}]}\n"))
    fired = ev.ingest([s(0.0, 9.0, host="a"), s(0.0, 9.0, host="b")], now=0.0)
    assert len(fired) == 4
    ended = ev.ingest([stale_marker("m", 5.0, {"host": "a"}), s(5.0, 9.0, host="b")], now=5.0)
    assert [(t.state, t.labels["host"], t.at) for t in ended] == [
        ("resolved", "a", 5.0), ("resolved", "a", 5.0)]
    assert {t.labels["host"] for t in ev.firing("r")} == {"b"}


def test_a_marker_finds_its_series_whatever_the_label_order() -> None:
    """Labels in another key order than the series' first sample: still that series' end."""
    ev = Evaluator(rule())
    assert len(ev.ingest([s(0.0, 9.0, host="a", zone="x")], now=0.0)) == 1
    ended = ev.ingest([stale_marker("m", 5.0, {"zone": "x", "host": "a"})], now=5.0)
    assert [(t.state, t.at) for t in ended] == [("resolved", 5.0)]
    assert ev.stats().series == 0


def test_a_quiet_series_ends_at_its_marker() -> None:
    """A series in the evaluator's calm fast path still sees the marker (pending -> dropped)."""
    ev = Evaluator(rule(**{"for": "10s", "missing": "{after: 1m}"}))
    ev.ingest([s(float(t), 1.0) for t in range(5)], now=4.0)  # calm: below the threshold
    ev.ingest([s(5.0, 9.0), stale_marker("m", 6.0)], now=6.0)
    assert ev.advance(100.0) == []
    assert ev.stats().series == 0


def test_rule_tests_read_stale_in_values() -> None:
    """promtool's `stale` in input_series values is a staleness marker."""
    assert expand_values("1 stale 2x1") == [1.0, STALE, 2.0, 2.0]


# Side by side with Prometheus: `promtool test rules` (1s evaluation) must expect exactly the
# alerts flarebus has firing at every second of the same series with the same markers.

def _flarebus_firing(rule_yaml: str, values: dict[str, str], end: int) -> dict[int, list[str]]:
    """host label of every firing series of rule r at each second 0..end."""
    ev = Evaluator(rules("  - " + rule_yaml + "\n"))
    expanded = {host: expand_values(text) for host, text in values.items()}
    firing: dict[int, list[str]] = {}
    for t in range(end + 1):
        batch = []
        for host, vals in expanded.items():
            v = vals[t] if t < len(vals) else None
            if v == STALE:
                batch.append(stale_marker("m", float(t), {"host": host}))
            elif isinstance(v, float):
                batch.append(s(float(t), v, host=host))
        ev.ingest(batch, now=float(t))
        ev.advance(float(t))
        firing[t] = sorted(x.labels["host"] for x in ev.firing("r"))
    return firing


def _promtool_agrees(tmp_path: Path, expr_for: str, values: dict[str, str],
                     firing: dict[int, list[str]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"alert": "r", "expr": "m > 5", "for": expr_for}]}]}))
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yaml"], "evaluation_interval": "1s",
        "tests": [{"interval": "1s",
                   "input_series": [{"series": f'm{{host="{h}"}}', "values": v}
                                    for h, v in values.items()],
                   "alert_rule_test": [
                       {"eval_time": f"{t}s", "alertname": "r",
                        "exp_alerts": [{"exp_labels": {"host": h}} for h in hosts]}
                       for t, hosts in firing.items()]}]}))
    return subprocess.run([system_binary("promtool"), "test", "rules", "test.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("for_", "values"), [
    ("0s", {"a": "9 9 9 stale", "b": "9x6"}),  # resolved at the marker, not 5 minutes later
    ("3s", {"a": "9x5 stale 9x6"}),  # firing, ended, pending again, firing again
    ("4s", {"a": "9 9 stale 9x8"}),  # pending dropped at the marker: for starts over
    ("0s", {"a": "1 9 stale _x3 9"}),  # a gap after the marker: nothing holds the last value
])
def test_prometheus_resolves_at_the_marker_too(tmp_path: Path, for_: str,
                                               values: dict[str, str]) -> None:
    """promtool's alerts at every second equal flarebus' for series ending with stale."""
    firing = _flarebus_firing(f"{{name: r, metric: m, when: '> 5', for: {for_}}}", values, 14)
    assert any(firing.values())  # the case shows something firing at all
    result = _promtool_agrees(tmp_path, for_, values, firing)
    assert result.returncode == 0, result.stdout + result.stderr


def test_replay_and_rule_tests_read_markers(tmp_path: Path) -> None:
    """A `"stale": true` line in `flarebus replay`, `stale` in a `flarebus test` series."""
    (tmp_path / "hot.yaml").write_text("rules:\n  - {name: hot, metric: cpu, when: '> 80'}\n")
    text = lines('{"name": "cpu", "value": 90, "ts": 0}',
                 '{"name": "cpu", "value": 0, "ts": 7, "stale": true}')
    result = run_flarebus("replay", "--rules", str(tmp_path / "hot.yaml"), "-", input=text)
    assert result.returncode == 0, result.stderr
    assert [(t.state, t.at) for t in map(trigger_decoder.decode, result.stdout.splitlines())] \
        == [("firing", 0.0), ("resolved", 7.0)]
    (tmp_path / "hot_test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["hot.yaml"], "tests": [{
            "interval": "1s", "input_series": [{"series": "cpu", "values": "90 90 stale"}],
            "alert_rule_test": [{"eval_time": "1s", "alertname": "hot",
                                 "exp_alerts": [{"exp_labels": {}}]},
                                {"eval_time": "2s", "alertname": "hot", "exp_alerts": []}]}]}))
    result = run_flarebus("test", str(tmp_path / "hot_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
