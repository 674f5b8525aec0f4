"""`flarebus replay` and `flarebus test`: offline evaluation and rule unit tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flarebus import rules as packaged
from flarebus.engine.language.ruletest import expand_values, parse_series
from flarebus.events import trigger_decoder
from tests.support import lines, run_flarebus

RULE = """rules:
  - name: hot
    metric: cpu.usage
    when: "> 80"
    for: 30s
    repeat: 1m
"""


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    path = tmp_path / "hot.yaml"
    path.write_text(RULE)
    return path


def _sample(ts: float, value: float, host: str = "a") -> str:
    return json.dumps({"name": "cpu.usage", "value": value, "ts": ts, "labels": {"host": host}})


def test_replay_prints_triggers_in_event_time_order(rule_file: Path, tmp_path: Path) -> None:
    """Each trigger one JSON line (wire format), timers fired as the clock passes them."""
    data = tmp_path / "samples.jsonl"
    data.write_text(lines(_sample(0, 90), _sample(10, 90, "b"), _sample(45, 90, "b"),
                          _sample(100, 90), _sample(130, 10), _sample(140, 10, "b")))
    result = run_flarebus("replay", "--rules", str(rule_file), str(data))
    assert result.returncode == 0, result.stderr
    triggers = [trigger_decoder.decode(line) for line in result.stdout.splitlines()]
    assert [(t.labels["host"], t.state, t.at) for t in triggers] == [
        ("a", "firing", 30.0), ("b", "firing", 40.0), ("a", "firing", 90.0),
        ("b", "firing", 100.0), ("a", "resolved", 130.0), ("b", "resolved", 140.0)]
    assert result.stderr == ""  # not a terminal: no progress


def test_replay_reads_stdin_and_is_deterministic(rule_file: Path) -> None:
    """`-` reads stdin; two runs over the same input print the same bytes."""
    text = lines(_sample(0, 90), _sample(40, 90))
    first = run_flarebus("replay", "--rules", str(rule_file), "-", input=text)
    second = run_flarebus("replay", "--rules", str(rule_file), "-", input=text)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert len(first.stdout.splitlines()) == 1


def test_replay_reports_bad_lines_and_goes_on(rule_file: Path) -> None:
    """A bad line is reported with its number on stderr; good lines still count; exit 1."""
    text = lines(_sample(0, 90), "{not json", '{"name": "cpu.usage"}', _sample(30, 90))
    result = run_flarebus("replay", "--rules", str(rule_file), "-", input=text)
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 1
    assert "<stdin>:2: " in result.stderr and "<stdin>:3: " in result.stderr
    assert "2 bad lines skipped" in result.stderr


def test_replay_with_invalid_rules_fails_with_positions(tmp_path: Path) -> None:
    """Invalid rules: the compiler-style errors, exit 1, nothing on stdout."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    metric: m\n    when: '> 1'\n    for: 3 min\n")
    result = run_flarebus("replay", "--rules", str(bad), "-", input="")
    assert result.returncode == 1 and result.stdout == ""
    assert f"{bad}:5:10: rule 'x': for: \"3 min\" is not a duration" in result.stderr


def test_shipped_rule_tests_pass() -> None:
    """CI: `flarebus test rules/tests/` passes on the shipped examples."""
    result = run_flarebus("test", str(packaged.tests_dir()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and ", 0 failed" in result.stdout


def test_failing_rule_test_prints_expected_and_got(tmp_path: Path, rule_file: Path) -> None:
    """A failing expectation prints expected vs got and exits 1."""
    test = tmp_path / "t.yaml"
    test.write_text(f"""rule_files: [{rule_file.name}]
tests:
  - name: too early
    interval: 10s
    input_series:
      - series: 'cpu.usage{{host="a"}}'
        values: '90x5'
    alert_rule_test:
      - eval_time: 20s
        alertname: hot
        exp_alerts: [{{exp_labels: {{host: a}}}}]
""")
    result = run_flarebus("test", str(test))
    assert result.returncode == 1
    assert f"FAIL {test}:9: test 'too early': alertname 'hot' at eval_time 20s" in result.stdout
    assert "expected: {'labels': {'host': 'a'}, 'annotations': {}}" in result.stdout
    assert "got:      (no alerts)" in result.stdout


def test_invalid_test_file_is_reported(tmp_path: Path, rule_file: Path) -> None:
    """Unknown alertname or bad series notation: a positioned error, exit 1."""
    test = tmp_path / "t.yaml"
    test.write_text(f"""rule_files: [{rule_file.name}]
tests:
  - input_series:
      - series: 'cpu.usage'
        values: '1 2 three'
    alert_rule_test:
      - {{eval_time: 1s, alertname: hot}}
""")
    result = run_flarebus("test", str(test))
    assert result.returncode == 1
    assert f"{test}:4:9: 'three' is not a value" in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("1 2 3", [1, 2, 3]), ("1+1x3", [1, 2, 3, 4]), ("5x2", [5, 5, 5]),
    ("10-2x2 _ 1", [10, 8, 6, None, 1]), ("_x3 4", [None, None, None, 4]),
    ("-1.5 1e2", [-1.5, 100]),
])
def test_series_notation(text: str, expected: list[float | None]) -> None:
    """promtool's compact notation: a+bxn, axn, _ and _xn."""
    assert expand_values(text) == expected


def test_series_selector() -> None:
    """name{label="value",...} with escapes."""
    assert parse_series('cpu.usage{host="web-1", zone="a\\"b"}') == (
        "cpu.usage", {"host": "web-1", "zone": 'a"b'})
    assert parse_series("up") == ("up", {})
    with pytest.raises(ValueError, match="bad labels"):
        parse_series("up{host=web}")


class TestReplayStream:
    """`flarebus replay --stream SINCE`: backtesting on the samples stream of durable ingest."""

    async def test_replays_what_the_stream_kept_since(self, rule_file: Path,
                                                     tmp_path: Path) -> None:
        """Samples in the stream replay like a file; a stored non-sample is named and skipped."""
        import time

        from flarebus import bus
        from flarebus.config import NatsSettings
        from flarebus.ingest_settings import IngestSettings
        from flarebus.nats_server import EmbeddedNats

        with EmbeddedNats(tmp_path / "nats") as server:
            nc = await bus.connect(NatsSettings(servers=[server.url]))
            try:
                await bus.ensure_samples_stream(nc.jetstream(), IngestSettings(),
                                                ["metrics.>", "stacks.>"])
                now = time.time()
                for ts, value in ((now - 100, 90), (now - 60, 90), (now - 40, 10)):
                    await nc.publish("metrics.cpu.usage", _sample(ts, value).encode())
                await nc.publish("metrics.cpu.usage", b"not json")
                await nc.flush()
            finally:
                await nc.close()
            result = run_flarebus("replay", "--rules", str(rule_file), "--stream", "1h",
                                  "--nats", server.url)
            missing = run_flarebus("replay", "--rules", str(rule_file), "--stream", "1h",
                                   "--config", str(self._other_stream(tmp_path)),
                                   "--nats", server.url)
        assert result.returncode == 0, result.stderr
        triggers = [trigger_decoder.decode(line) for line in result.stdout.splitlines()]
        assert [(t.state, round(t.at - now)) for t in triggers] == [
            ("firing", -70), ("resolved", -40)], triggers
        assert "3 samples from stream FLAREBUS_SAMPLES, 2 triggers" in result.stderr
        assert "FLAREBUS_SAMPLES:4 (metrics.cpu.usage):" in result.stderr, result.stderr
        assert missing.returncode == 1 and "no stream 'ELSEWHERE'" in missing.stderr, \
            missing.stderr

    @staticmethod
    def _other_stream(tmp_path: Path) -> Path:
        conf = tmp_path / "other.yaml"
        conf.write_text("engine:\n  ingest:\n    stream: ELSEWHERE\n")
        return conf
