"""Stack rule figures: share, weight per second and stack count of matching frames."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.rulefile import RuleSet, load_rules
from flarebus.engine.language.stack_figures import figure, frame_matcher
from flarebus.events import Stack, StackSample

STACKS = [Stack(["main", "serve", "db.query"], 6), Stack(["main", "serve", "db.query_many"], 2),
          Stack(["main", "render"], 2)]


def test_share_of_stacks_holding_a_glob_match() -> None:
    """share is the weight through a matching frame over all weight."""
    assert figure(STACKS, "share", "db.query*") == 0.8
    assert figure(STACKS, "share", "db.query") == 0.6
    assert figure([], "share", "x") == 0.0


def test_regex_patterns_are_searched() -> None:
    """A ~pattern is a regex found anywhere in the frame name."""
    assert figure(STACKS, "share", "~query_") == 0.2
    assert frame_matcher("~^main$")("main") and not frame_matcher("~^mai$")("main")


def test_weight_is_per_second_and_stacks_counts() -> None:
    """weight divides the matching weight by the span; stacks counts the stacks."""
    assert figure(STACKS, "weight", "render", seconds=2) == 1.0
    assert figure(STACKS, "stacks") == 3


def test_share_needs_a_pattern() -> None:
    """share without a frame pattern is an error, not a silent 0."""
    with pytest.raises(ValueError, match="needs a frame pattern"):
        figure(STACKS, "share")


def _rules(tmp_path: Path, body: str) -> RuleSet:
    path = tmp_path / "stack.yaml"
    path.write_text(body)
    return load_rules([path])


def test_a_stack_rule_fires_and_resolves_through_the_evaluator(tmp_path: Path) -> None:
    """share of db.query* held above 0.3 for 2s fires; falling below resolves."""
    rules = _rules(tmp_path, textwrap.dedent("""
        rules:
          - name: db-hotspot
            stack: {source: api, frame: "db.query*", measure: share}
            when: "> 0.3"
            for: 2s
    """))
    evaluator = Evaluator(rules)
    hot = [Stack(["main", "db.query"], 8), Stack(["main", "render"], 2)]
    cold = [Stack(["main", "render"], 10)]
    fired = [t for ts in (100.0, 101.0, 102.0)
             for t in evaluator.ingest_stacks([StackSample("api", hot, ts)], now=ts)]
    assert [(t.rule, t.state, t.value, t.metric_name) for t in fired] == \
        [("db-hotspot", "firing", 0.8, "stacks.api")]
    resolved = evaluator.ingest_stacks([StackSample("api", cold, 103.0)], now=103.0)
    assert [t.state for t in resolved] == ["resolved"]


def test_weight_per_second_uses_the_time_between_samples(tmp_path: Path) -> None:
    """weight_per_second divides by the gap since the previous stack sample of the series."""
    rules = _rules(tmp_path, textwrap.dedent("""
        rules:
          - name: busy
            stack: {source: api, frame: "~render", measure: weight_per_second}
            when: ">= 5"
            for: 0s
    """))
    evaluator = Evaluator(rules)
    stacks = [Stack(["main", "render"], 10)]
    assert evaluator.ingest_stacks([StackSample("api", stacks, 10.0)], now=10.0) == []
    fired = evaluator.ingest_stacks([StackSample("api", stacks, 12.0)], now=12.0)
    assert [(t.state, t.value) for t in fired] == [("firing", 5.0)]
