"""The cardinality guard: per-rule and global bounds on tracked series (engine.limits)."""

from __future__ import annotations

import logging

import pytest

from flarebus.cli.status import render
from flarebus.engine.language.cardinality import GLOBAL, SeriesGuard
from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.service.cardinality import CardinalityReport
from flarebus.engine.service.metrics import EngineStats
from flarebus.events import MetricSample
from flarebus.summary import EngineSummary
from tests.test_evaluator import rules

TWO_RULES = rules(
    "  - {name: a, metric: m, when: '> 5', missing: {after: 10s, then: resolve}}\n"
    "  - {name: b, metric: m, when: '> 50', missing: {after: 10s, then: resolve}}\n")


def sample(ts: float, value: float, host: str) -> MetricSample:
    return MetricSample(name="m", value=value, ts=ts, labels={"host": host})


def guarded(max_series: int, per_rule: int) -> tuple[Evaluator, SeriesGuard]:
    guard = SeriesGuard(max_series, per_rule)
    return Evaluator(TWO_RULES, guard=guard), guard


class TestPerRuleLimit:
    """Past a rule's limit its new series are refused; tracked ones keep working."""

    def test_new_series_refused_tracked_ones_fire(self) -> None:
        """3 series allowed per rule: the 4th and 5th are refused and counted, the 3 fire."""
        ev, guard = guarded(100, 3)
        out = ev.ingest([sample(1, 1, f"h{i}") for i in range(5)], now=1)
        assert out == [] and guard.total == 3
        assert guard.refused == {"a": 2, "b": 2}, guard.refused
        fired = ev.ingest([sample(2, 99, f"h{i}") for i in range(5)], now=2)
        hosts = sorted((t.rule, t.labels["host"]) for t in fired)
        assert hosts == [(r, f"h{i}") for r in "ab" for i in range(3)], hosts
        assert guard.refused_total == 4, guard.refused_total

    def test_room_made_by_stale_series_admits_new_ones(self) -> None:
        """Once tracked series go stale and are forgotten, a refused one is admitted."""
        ev, guard = guarded(100, 2)
        ev.ingest([sample(1, 1, "h0"), sample(1, 1, "h1"), sample(1, 1, "h2")], now=1)
        assert guard.total == 2 and guard.refused_total == 1
        ev.advance(20)  # both go stale (missing.after 10s) and are forgotten
        assert guard.total == 0, guard.total
        ev.ingest([sample(21, 99, "h2")], now=21)
        assert guard.per_rule == {"a": 1, "b": 1}

    def test_a_reload_recounts(self) -> None:
        """A reload that drops rule b leaves only rule a's series counted."""
        ev, guard = guarded(100, 10)
        ev.ingest([sample(1, 1, f"h{i}") for i in range(4)], now=1)
        assert guard.per_rule == {"a": 4, "b": 4}
        ev.replace_rules(rules("  - {name: a, metric: m, when: '> 5'}\n"), now=2)
        assert guard.per_rule["a"] == 4 and guard.per_rule["b"] == 0 and guard.total == 4


class TestGlobalLimit:
    """Past the global limit no new series is tracked for any rule."""

    def test_global_bound_refuses_every_rule(self) -> None:
        """max_series 2: the third series is refused for all rules, counted under '*'."""
        ev, guard = guarded(2, 100)
        ev.ingest([sample(1, 1, f"h{i}") for i in range(3)], now=1)
        assert guard.total == 2 and guard.refused == {GLOBAL: 1}


class TestReport:
    """The engine's figures and its log line."""

    def test_counts_reach_stats_and_log_once_per_interval(
            self, caplog: pytest.LogCaptureFixture) -> None:
        """Refusals become dropped['cardinality'] and series_refused; one ERROR line."""
        ev, guard = guarded(100, 1)
        stats = EngineStats()
        report = CardinalityReport(guard, stats, interval=3600)
        with caplog.at_level(logging.ERROR, "flarebus.engine.cardinality"):
            for i in range(3):
                ev.ingest([sample(1, 1, f"h{i}")], now=1)
                report.check()
        assert stats.dropped["cardinality"] == 2, stats.dropped
        assert stats.as_dict()["series_refused"] == {"a": 2, "b": 2}
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "CARDINALITY LIMIT" in lines[0], lines
        assert "rule a (1 series)" in lines[0], lines[0]

    def test_status_shows_the_refusals_and_the_lost_input(self) -> None:
        """`flarebus status` has a CARDINALITY LIMIT line and an INPUT LOST line when due."""
        stats = EngineStats()
        stats.series_refused = {"a": 7}
        stats.drop("cardinality", 7)
        stats.disconnected("slow_consumer")
        summary = EngineSummary(shard="0/1", host="h", pid=1, started_at=0, updated_at=1,
                                rule_files=[], rules=[], series=0, pending=0, firing=0,
                                states=[], stats=stats.as_dict())
        text = render([summary], 2)
        assert "CARDINALITY LIMIT: samples of new series refused, by rule: a 7" in text, text
        assert "INPUT LOST: slow_consumer_disconnects 1" in text, text
        assert "dropped: cardinality 7, slow_consumer_disconnects 1" in text, text
