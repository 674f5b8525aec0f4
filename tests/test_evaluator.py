"""The evaluator's semantics: every feature and transition, in event time, as table tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.reducers import reduce_window
from flarebus.engine.language.replay import replay
from flarebus.engine.language.rulefile import RuleSet, load_rules_text
from flarebus.events import MetricSample, Stack, StackSample, Trigger


def rules(body: str) -> RuleSet:
    return load_rules_text("rules:\n" + body)


def rule(**fields: object) -> RuleSet:
    """One rule on metric m (name r) with the given fields, as YAML flow mapping."""
    base = {"name": "r", "metric": "m", "when": "'> 5'"}
    base.update({k: v for k, v in fields.items()})
    inner = ", ".join(f"{k}: {v}" for k, v in base.items())
    return rules(f"  - {{{inner}}}\n")


def s(ts: float, value: float, **labels: str) -> MetricSample:
    return MetricSample(name="m", value=value, ts=ts, labels=labels)


def run(ruleset: RuleSet, samples: list[MetricSample], until: float | None = None
        ) -> list[tuple[str, float]]:
    """(state, at) of every trigger replaying ``samples``."""
    return [(t.state, t.at) for t in replay(Evaluator(ruleset), samples, until=until)]


def series(pairs: str) -> list[MetricSample]:
    """'0:1 10:9' -> samples of m at those times."""
    return [s(float(t), float(v)) for t, v in (p.split(":") for p in pairs.split())]


# (rule fields, samples "ts:value ...", until, expected [(state, at)])
TABLE = [
    # inactive -> pending -> firing at a sample whose ts reaches t0 + for
    ({"for": "10s"}, "0:9 5:9 10:9", None, [("firing", 10.0)]),
    # pending -> inactive: the run breaks before `for`; nothing is published
    ({"for": "10s"}, "0:9 5:1 10:9", None, []),
    # fire by timer between samples: the last value holds
    ({"for": "10s"}, "0:9 30:9", None, [("firing", 10.0)]),
    # for: 0s fires on the first sample that holds
    ({}, "0:1 3:9", None, [("firing", 3.0)]),
    # firing -> resolved when `when` stops holding
    ({"for": "5s"}, "0:9 5:9 8:1", None, [("firing", 5.0), ("resolved", 8.0)]),
    # hysteresis: 4 is not < 3, so it stays firing; 2 resolves
    ({"clear": "'< 3'"}, "0:9 1:4 2:9 3:2", None, [("firing", 0.0), ("resolved", 3.0)]),
    # hysteresis does not keep a *pending* series: 4 breaks the run
    ({"for": "5s", "clear": "'< 3'"}, "0:9 1:4 6:9", None, []),
    # keep_firing_for: resolves 3s after clear first held
    ({"keep_firing_for": "3s"}, "0:9 10:1 11:1", 20.0, [("firing", 0.0), ("resolved", 13.0)]),
    # keep_firing_for: the condition returning inside the window keeps it firing, once
    ({"keep_firing_for": "3s"}, "0:9 10:1 12:9 20:9", None, [("firing", 0.0)]),
    # keep_firing_for reached exactly at a sample
    ({"keep_firing_for": "3s"}, "0:9 10:1 13:1", None, [("firing", 0.0), ("resolved", 13.0)]),
    # stale (missing.after, default resolve): a firing series resolves at last + after
    ({"missing": "{after: 10s}"}, "0:9", 30.0, [("firing", 0.0), ("resolved", 10.0)]),
    # stale before `for` is reached: never fires
    ({"for": "20s", "missing": "{after: 10s}"}, "0:9", 60.0, []),
    # stale and `for` at the same instant: stale wins (the value no longer holds then)
    ({"for": "10s", "missing": "{after: 10s}"}, "0:9", 60.0, []),
    # keep: the last value holds forever; `for` completes without samples
    ({"for": "20s", "missing": "{after: 10s, then: keep}"}, "0:9", 60.0, [("firing", 20.0)]),
    # fire: the absence itself fires, and returning data resolves it
    ({"missing": "{after: 10s, then: fire}"}, "0:1 5:1 30:1", None,
     [("firing", 15.0), ("resolved", 30.0)]),
    # repeat: re-published every 10s while firing, until it resolves
    ({"repeat": "10s"}, "0:9 25:1", None,
     [("firing", 0.0), ("firing", 10.0), ("firing", 20.0), ("resolved", 25.0)]),
    # a sample exactly at a deadline is applied first: 1 at t=10 prevents firing at 10
    ({"for": "10s"}, "0:9 10:1", None, []),
    # for not a multiple of the sample interval: fires at t0 + for, between samples
    ({"for": "25s"}, "0:9 10:9 20:9 30:9", None, [("firing", 25.0)]),
]


@pytest.mark.parametrize(("fields", "samples", "until", "expected"), TABLE)
def test_transition_table(fields: dict[str, str], samples: str, until: float | None,
                          expected: list[tuple[str, float]]) -> None:
    """Each transition of inactive/pending/firing/resolved, at the exact event time."""
    assert run(rule(**fields), series(samples), until) == expected


def test_thresholds_all_operators() -> None:
    """> >= < <= == != each decide whether a sample holds."""
    cases = {"'> 5'": [6], "'>= 5'": [5, 6], "'< 5'": [4], "'<= 5'": [4, 5], "'== 5'": [5],
             "'!= 5'": [4, 6]}
    for when, holding in cases.items():
        got = []
        for value in (4, 5, 6):
            fired = run(rule(when=when), [s(0, value)])
            if fired:
                got.append(value)
        assert got == holding, when


def test_each_series_is_evaluated_on_its_own_and_matchers_select_series() -> None:
    """Series are independent; exact, regex and absent matchers pick which ones count."""
    ruleset = rule(labels="{env: prod, host: '~web-[0-9]+', canary: null}")
    samples = [s(0, 9, env="prod", host="web-1"), s(0, 9, env="prod", host="web-2"),
               s(0, 9, env="dev", host="web-3"), s(0, 9, env="prod", host="db-1"),
               s(0, 9, env="prod", host="web-4", canary="1"), s(1, 1, env="prod", host="web-2")]
    triggers = list(replay(Evaluator(ruleset), samples))
    assert [(t.labels["host"], t.state) for t in triggers] == [
        ("web-1", "firing"), ("web-2", "firing"), ("web-2", "resolved")]


def test_trigger_carries_the_wire_fields() -> None:
    """value, threshold, duration, labels (+add_labels), annotations, actions, severity."""
    ruleset = rule(**{"for": "30s", "severity": "critical", "add_labels": "{team: web}",
                      "actions": "[log, {plugin: http, config: {url: 'http://h'}}]",
                      "annotations": "{summary: 'v={value} on {labels[host]} {threshold} "
                                     "for {duration} [{labels[nope]}]'}"})
    triggers = list(replay(Evaluator(ruleset), [s(100.25, 93.5, host="web-1"),
                                               s(131.25, 94, host="web-1")]))
    assert len(triggers) == 1
    t = triggers[0]
    assert (t.rule, t.state, t.severity, t.metric_name, t.value, t.threshold) == (
        "r", "firing", "critical", "m", 93.5, "> 5")
    assert (t.active_since, t.at, t.duration) == (100.25, 130.25, 30.0)
    assert t.labels == {"host": "web-1", "team": "web"}
    assert t.annotations == {"summary": "v=93.5 on web-1 > 5 for 30s []"}
    assert [(a.plugin, a.config) for a in t.actions] == [("log", {}), ("http", {"url": "http://h"})]


def test_trigger_ids_are_deterministic_and_distinct() -> None:
    """Same input, same ids; firing, repeats and resolution each get their own id."""
    ruleset = rule(repeat="5s")
    samples = series("0:9 12:1 20:9 21:1")
    first = [t.id for t in replay(Evaluator(ruleset), samples)]
    second = [t.id for t in replay(Evaluator(ruleset), series("0:9 12:1 20:9 21:1"))]
    assert first == second
    assert len(set(first)) == len(first) == 6


def test_out_of_order_samples_are_dropped_and_counted() -> None:
    """A sample older than the newest of its series is dropped; equal ts is applied."""
    ev = Evaluator(rule(**{"for": "10s"}))
    triggers = ev.ingest([s(10, 9), s(5, 1), s(10, 9), s(20, 9)], now=0)
    assert ev.stats().samples_dropped_out_of_order == 1
    assert [(t.state, t.at, t.active_since) for t in triggers] == [("firing", 20.0, 10.0)]


def test_samples_without_ts_take_now() -> None:
    """ts None means the caller's now."""
    ev = Evaluator(rule())
    triggers = ev.ingest([MetricSample(name="m", value=9)], now=42.0)
    assert [(t.state, t.at) for t in triggers] == [("firing", 42.0)]


def test_timers_due_before_a_sample_fire_first_with_their_own_time() -> None:
    """A sample of another series at t=50 first fires the t=10 deadline, stamped 10."""
    ev = Evaluator(rule(**{"for": "10s"}))
    assert ev.ingest([s(0, 9, host="a")], now=0) == []
    assert ev.next_deadline() == 10.0
    triggers = ev.ingest([s(50, 1, host="b")], now=50)
    assert [(t.labels, t.at) for t in triggers] == [({"host": "a"}, 10.0)]


def test_next_deadline_before_answers_only_an_earlier_deadline() -> None:
    """With ``before``, the exact deadline if it is earlier, else None (the engine's timer)."""
    ev = Evaluator(rule(**{"for": "10s", "missing": "{after: 30s}"}))
    ev.ingest([s(0, 1, host="a")], now=0)
    assert ev.next_deadline(30.0) is None and ev.next_deadline(30.5) == 30.0
    ev.ingest([s(5, 1, host="a"), s(6, 9, host="b")], now=6)
    assert ev.next_deadline(17.0) == 16.0  # b's `for`, earlier than any staleness
    ev.ingest([s(7, 1, host="b")], now=7)
    assert ev.next_deadline(36.0) == 35.0 and ev.next_deadline(35.0) is None  # a moved to 35
    assert ev.next_deadline() == 35.0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 9)),
                min_size=1, max_size=40),
       st.lists(st.integers(0, 120), min_size=40, max_size=40))
def test_next_deadline_before_agrees_with_the_exact_answer(
        steps: list[tuple[int, int, int]], befores: list[int]) -> None:
    """After any samples and timer runs, next_deadline(b) == exact if exact < b else None."""
    ruleset = rule(**{"for": "7s", "keep_firing_for": "5s", "repeat": "11s",
                      "missing": "{after: 20s}"})
    exact, bounded = Evaluator(ruleset), Evaluator(ruleset)
    ts = 0
    for (host, gap, value), before in zip(steps, befores, strict=False):
        ts += gap
        sample = [s(float(ts), float(value), host=f"h{host}")]
        assert exact.ingest(sample, now=ts) == bounded.ingest(sample, now=ts)
        if value == 0:  # now and then, a timer run between samples
            assert exact.advance(ts + 0.5) == bounded.advance(ts + 0.5)
        want = exact.next_deadline()
        assert bounded.next_deadline(float(before)) == (
            want if want is not None and want < before else None)


def test_advance_and_next_deadline_return_not_sleep() -> None:
    """Deadlines are values; advance(now) fires what is due at or before now."""
    ev = Evaluator(rule(**{"for": "10s", "repeat": "1m"}))
    ev.ingest([s(0, 9)], now=0)
    assert ev.advance(9.999) == []
    assert [t.at for t in ev.advance(10.0)] == [10.0]
    assert ev.next_deadline() == 70.0
    assert [t.at for t in ev.advance(200.0)] == [70.0, 130.0, 190.0]


def test_several_series_changing_at_the_same_instant() -> None:
    """Series crossing together fire together, in a stable order, each once."""
    samples = [s(t, 9 if t >= 5 else 1, host=h) for t in range(10) for h in ("b", "a", "c")]
    triggers = list(replay(Evaluator(rule(**{"for": "2s"})), samples))
    assert [(t.labels["host"], t.at) for t in triggers] == [("b", 7.0), ("a", 7.0), ("c", 7.0)]


def test_escalation_stage_fires_on_its_own() -> None:
    """A stricter stage fires with its own for, severity and actions; the base stays."""
    ruleset = rules("""  - name: r
    metric: m
    when: "> 5"
    for: 5s
    actions: [log]
    escalate:
      - {when: "> 8", for: 10s, severity: critical, actions: [page]}
""")
    samples = series("0:9 5:9 10:9 12:7 20:1")
    triggers = [(t.severity, t.state, t.at, t.threshold, [a.plugin for a in t.actions])
                for t in replay(Evaluator(ruleset), samples)]
    assert triggers == [("warning", "firing", 5.0, "> 5", ["log"]),
                        ("critical", "firing", 10.0, "> 8", ["page"]),
                        ("critical", "resolved", 12.0, "> 8", ["page"]),
                        ("warning", "resolved", 20.0, "> 5", ["log"])]


@pytest.mark.parametrize(("fn", "expected"), [
    ("avg", 2.5), ("min", 1.0), ("max", 4.0), ("sum", 10.0), ("count", 4.0),
    ("p50", 2.5), ("p90", 3.7), ("p99", 3.97),
])
def test_reduce_functions(fn: str, expected: float) -> None:
    """Window aggregates, quantiles interpolated like Prometheus' quantile_over_time."""
    from collections import deque
    window = deque([(0.0, 4.0), (1.0, 1.0), (2.0, 3.0), (3.0, 2.0)])
    assert reduce_window(fn, window) == pytest.approx(expected)


def test_reduce_rate_handles_counter_resets() -> None:
    """rate: increase per second; a reset counts the new value as increase."""
    from collections import deque
    assert reduce_window("rate", deque([(0.0, 10.0)])) is None
    assert reduce_window("rate", deque([(0.0, 0.0), (10.0, 50.0), (20.0, 5.0)])) == 2.75


def test_reduce_window_slides() -> None:
    """avg over 10s: samples with ts in (t-10, t] count; the spike ages out."""
    ruleset = rule(reduce="{fn: avg, over: 10s}")
    samples = series("0:0 5:20 10:0 15:0")
    # t=5: avg(0,20)=10 fires; t=10: window (0,10] = 20,0 -> 10 holds; t=15: (5,15] = 0,0
    assert run(ruleset, samples) == [("firing", 5.0), ("resolved", 15.0)]


def test_disabled_rules_are_not_evaluated() -> None:
    """enabled: false rules load but never fire."""
    assert run(rule(enabled="false"), series("0:9")) == []


def test_state_survives_export_and_import() -> None:
    """Pending 20s into a 30s for fires 10s after restore; a firing one does not re-fire."""
    ruleset = rules("  - {name: p, metric: m, when: '> 5', for: 30s}\n"
                    "  - {name: f, metric: f, when: '> 5'}\n")
    ev = Evaluator(ruleset)
    ev.ingest([s(0, 9), MetricSample(name="f", value=9, ts=0)], now=0)
    ev.ingest([s(20, 9)], now=20)
    saved = {k: v for k, v in ev.take_dirty().items() if v is not None}
    assert sorted(k.split(".")[0] for k in saved) == ["f", "p"]
    assert all(set(k) <= set("-/_=.abcdefghijklmnopqrstuvwxyz0123456789") for k in saved)
    fresh = Evaluator(ruleset)
    fresh.load_state(saved)
    assert fresh.next_deadline() == 30.0
    assert fresh.ingest([MetricSample(name="f", value=9, ts=25)], now=25) == []
    triggers = fresh.advance(30)
    assert [(t.rule, t.state, t.at, t.active_since) for t in triggers] == [("p", "firing", 30.0,
                                                                           0.0)]
    assert fresh.ingest([MetricSample(name="f", value=1, ts=31)], now=31)[0].state == "resolved"
    assert fresh.take_dirty()[next(k for k in saved if k.startswith("f."))] is None


def test_state_of_changed_rules_is_ignored_on_import() -> None:
    """A saved state whose rule fingerprint changed is dropped."""
    ev = Evaluator(rule(**{"for": "30s"}))
    ev.ingest([s(0, 9)], now=0)
    saved = ev.take_dirty()
    other = Evaluator(rule(**{"for": "40s"}))
    other.load_state({k: v for k, v in saved.items() if v})
    assert other.stats().pending == 0 and other.next_deadline() is None


def test_replace_rules_keeps_unchanged_and_resolves_changed_or_removed() -> None:
    """Hot reload: same fingerprint keeps state; changed/removed firing series resolve."""
    before = rules("  - {name: keep, metric: m, when: '> 5'}\n"
                   "  - {name: change, metric: m, when: '> 5'}\n"
                   "  - {name: drop, metric: m, when: '> 5'}\n")
    after = rules("  - {name: keep, metric: m, when: '> 5'}\n"
                  "  - {name: change, metric: m, when: '> 6'}\n"
                  "  - {name: new, metric: m, when: '> 5'}\n")
    ev = Evaluator(before)
    assert len(ev.ingest([s(0, 9)], now=0)) == 3
    out = ev.replace_rules(after, now=5)
    assert sorted((t.rule, t.state, t.at) for t in out) == [("change", "resolved", 5.0),
                                                              ("drop", "resolved", 5.0)]
    triggers = ev.ingest([s(6, 9)], now=6)
    assert sorted(t.rule for t in triggers) == ["change", "new"]  # keep is still firing
    assert [t.rule for t in ev.firing("keep")] == ["keep"]


def test_owns_filters_series_of_other_shards() -> None:
    """owns(series_key) False: the sample is ignored."""
    ev = Evaluator(rule(), owns=lambda key: "web-1" in key)
    triggers = ev.ingest([s(0, 9, host="web-1"), s(0, 9, host="web-2")], now=0)
    assert [t.labels["host"] for t in triggers] == ["web-1"]
    assert ev.stats().series == 1


def test_stale_series_are_forgotten() -> None:
    """Memory: a series that stopped reporting is dropped after missing.after."""
    ev = Evaluator(rule(missing="{after: 10s}"))
    ev.ingest([s(0, 1, host=str(i)) for i in range(100)], now=0)
    assert ev.stats().series == 100
    ev.advance(10)
    assert ev.stats().series == 0 and ev.next_deadline() is None


def test_label_order_does_not_split_a_series() -> None:
    """The same labels in another order are the same series."""
    ev = Evaluator(rule(**{"for": "5s"}))
    ev.ingest([MetricSample(name="m", value=9, ts=0, labels={"a": "1", "b": "2"}),
               MetricSample(name="m", value=9, ts=5, labels={"b": "2", "a": "1"})], now=5)
    assert ev.stats().series == 1 and ev.stats().firing == 1


def test_states_and_stats_report_each_series() -> None:
    """states() lists rule, series, state, since, value; stats() counts them."""
    ev = Evaluator(rule(**{"for": "10s"}))
    ev.ingest([s(0, 9, host="a"), s(0, 1, host="b")], now=0)
    states = {st.labels["host"]: (st.state, st.since, st.value) for st in ev.states()}
    assert states == {"a": ("pending", 0.0, 9), "b": ("inactive", 0.0, 1)}
    stats = ev.stats()
    assert (stats.series, stats.pending, stats.firing, stats.rules) == (2, 1, 0, 1)


def test_stack_rules_run_the_same_state_machine() -> None:
    """A stack rule's figure (from the measure seam) goes through pending/firing like a metric."""
    ruleset = rules("  - {name: hot, stack: {source: api, frame: 'db*'}, when: '> 0.5', "
                    "for: 10s}\n")
    def measure(spec: object, sample: StackSample, interval: float | None) -> float:
        return sample.stacks[0].weight / 10
    ev = Evaluator(ruleset, stack_measure=measure)
    def stack(ts: float, weight: float) -> StackSample:
        return StackSample(source="api", ts=ts, stacks=[Stack(frames=["main", "db.query"],
                                                               weight=weight),
                                                         Stack(frames=["main"], weight=1)])
    out: list[Trigger] = []
    for ts, w in ((0, 9), (5, 9), (10, 9)):
        out += ev.ingest_stacks([stack(ts, w)], now=ts)
    assert [(t.state, t.at, t.metric_name, t.value) for t in out] == [
        ("firing", 10.0, "stacks.api", 0.9)]


def test_stack_rules_use_the_samplers_figures_by_default() -> None:
    """Without an explicit measure, the packaged stack figures (share) are used."""
    ruleset = rules("  - {name: hot, stack: {source: api, frame: 'db*'}, when: '> 0.5'}\n")
    sample = StackSample(source="api", ts=1, stacks=[Stack(frames=["main", "db.query"], weight=9),
                                                     Stack(frames=["main"], weight=1)])
    triggers = Evaluator(ruleset).ingest_stacks([sample], now=1)
    assert [(t.state, t.value) for t in triggers] == [("firing", 0.9)]


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
       t=st.floats(-1e6, 1e6, allow_nan=False), step=st.integers(-3, 3))
def test_quiet_range_holds_only_values_that_fail_the_threshold(op: str, t: float,
                                                                step: int) -> None:
    """Entry's one-test fast path: a value in a check's quiet range never passes its `when`."""
    import math

    from flarebus.engine.language.series import quiet_range
    from flarebus.engine.language.thresholds import Threshold

    test = Threshold(op, t).test
    lo, hi = quiet_range(op, t)
    value = t
    for _ in range(abs(step)):  # the neighbouring floats, where strictness matters
        value = math.nextafter(value, math.copysign(math.inf, step))
    if lo <= value <= hi:
        assert not test(value)
    elif op != "==":  # "==" has no quiet range at all; the others leave out only what passes
        assert test(value)


def test_a_quiet_series_still_fires_when_a_timer_or_a_crossing_comes() -> None:
    """Several rules on one series: quiet samples take the fast path, yet nothing is missed."""
    ev = Evaluator(load_rules_text(
        "rules:\n"
        "  - {name: hi, metric: m, when: '> 10', for: 2s}\n"
        "  - {name: lo, metric: m, when: '<= -1'}\n"
        "  - {name: ne, metric: m, when: '!= 0', missing: {after: 5s, then: fire}}\n"))
    fired = [t.rule for ts in range(4) for t in ev.ingest([MetricSample("m", 0.0, float(ts))],
                                                           now=0.0)]
    assert fired == []
    fired = [(t.rule, t.at) for t in ev.ingest([MetricSample("m", 11.0, 4.0)], now=0.0)]
    assert fired == [("ne", 4.0)]
    fired = [(t.rule, t.state, t.at) for t in ev.advance(6.0)]
    assert fired == [("hi", "firing", 6.0)]
    fired = [(t.rule, t.state) for t in ev.ingest([MetricSample("m", -1.0, 7.0)], now=0.0)]
    assert fired == [("hi", "resolved"), ("lo", "firing")]  # ne has been firing since 4


def test_a_quiet_series_reports_and_fires_with_its_latest_value() -> None:
    """A calm series keeps its value once; statuses and triggers still show the latest."""
    ev = Evaluator(load_rules_text(
        "rules:\n"
        "  - {name: hi, metric: m, when: '> 10'}\n"
        "  - {name: lo, metric: m, when: '< -10', missing: {after: 5s, then: fire}}\n"))
    for ts, value in enumerate([1.0, 2.0, 3.0]):
        assert ev.ingest([MetricSample("m", value, float(ts))], now=0.0) == []
    assert {st.rule: st.value for st in ev.states()} == {"hi": 3.0, "lo": 3.0}
    (stale,) = ev.advance(7.0)  # lo fires on staleness, with the last value seen
    assert (stale.rule, stale.value, stale.at) == ("lo", 3.0, 7.0)
    assert {st.rule: st.value for st in ev.states()} == {"hi": 3.0, "lo": 3.0}
