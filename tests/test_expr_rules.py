"""expr rules in the evaluator: what each operator gives, event time, staleness, batching,
recording, reloads, checkpoints, sharding and the mistakes the loader reports."""

from __future__ import annotations

import pytest

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.replay import replay
from flarebus.engine.language.rulefile import RuleSet, load_rules_text
from flarebus.errors import InvalidFileError
from flarebus.events import MetricSample, Trigger


def expr_rule(expr: str, when: str = "> -1e300", **fields: str) -> RuleSet:
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    return load_rules_text(f"rules:\n  - {{name: r, expr: '{expr}', when: '{when}'{extra}}}\n")


def m(name: str, ts: float, value: float, **labels: str) -> MetricSample:
    return MetricSample(name=name, value=value, ts=ts, labels=labels)


def outputs(ev: Evaluator) -> dict[str, float]:
    """Every output series of the rule now: its labels as text -> value."""
    return {",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value
            for s in ev.states()}


def at(ruleset: RuleSet, samples: list[MetricSample], t: float) -> dict[str, float]:
    ev = Evaluator(ruleset)
    ev.ingest(samples, now=t)
    ev.advance(t)
    return outputs(ev)


def states(triggers: list[Trigger]) -> list[tuple[str, float, dict[str, str]]]:
    return [(t.state, t.at, t.labels) for t in triggers]


def restarted(rules: RuleSet) -> Evaluator:
    """An evaluator restored from the checkpoint of one that saw x{svc="a"} = 9 at 0."""
    ev = Evaluator(rules)
    ev.ingest([m("x", 0, 9, svc="a")], now=0)
    ev.advance(0)
    again = Evaluator(rules)
    again.load_state({k: v for k, v in ev.take_dirty().items() if v is not None})
    return again


HOSTS = [m("req", 0, 10, host="a", svc="web"), m("req", 0, 30, host="b", svc="web"),
         m("req", 0, 5, host="c", svc="db"),
         m("err", 0, 1, host="a", svc="web"), m("err", 0, 3, host="b", svc="web"),
         m("err", 0, 1, host="c", svc="db")]


@pytest.mark.parametrize(("expr", "expected"), [
    ('req{svc="web"}', {"host=a,svc=web": 10, "host=b,svc=web": 30}),
    ('req{host=~"a|c"}', {"host=a,svc=web": 10, "host=c,svc=db": 5}),
    ('req{host!~"a|c"}', {"host=b,svc=web": 30}),
    ('req{svc!="web"} * 2', {"host=c,svc=db": 10}),
    ('100 - req{svc="db"}', {"host=c,svc=db": 95}),
    ('-req{svc="db"}', {"host=c,svc=db": -5}),
    ('err / req', {"host=a,svc=web": 0.1, "host=b,svc=web": 0.1, "host=c,svc=db": 0.2}),
    ('err + req{host="a"}', {"host=a,svc=web": 11}),
    ("sum by (svc) (req)", {"svc=web": 40, "svc=db": 5}),
    ("sum(req) by (svc)", {"svc=web": 40, "svc=db": 5}),
    ("avg without (host) (req)", {"svc=web": 20, "svc=db": 5}),
    ("min by (svc) (req)", {"svc=web": 10, "svc=db": 5}),
    ("max(req)", {"": 30}),
    ("count by (svc) (req)", {"svc=web": 2, "svc=db": 1}),
    ("sum by (svc) (err) / sum by (svc) (req)", {"svc=web": 0.1, "svc=db": 0.2}),
    ("err / on(host) req", {"host=a": 0.1, "host=b": 0.1, "host=c": 0.2}),
    ("err / ignoring(host) sum by (svc) (req)", {"svc=db": 0.2}),  # web: two on the left
    ('absent(req{host="z"})', {"host=z": 1}),
    ('absent(req{host="a"})', {}),
    ("(sum by (svc) (req) + 10) / 5", {"svc=web": 10, "svc=db": 3}),
])
def test_operators(expr: str, expected: dict[str, float]) -> None:
    """Each operator's output series and values, on one instant of samples."""
    assert at(expr_rule(expr), HOSTS, 0.0) == pytest.approx(expected)


def test_histogram_quantile_of_bucket_rates_per_service() -> None:
    """histogram_quantile(0.5, sum by (le, svc) (rate(...))) on counters growing 10/s."""
    samples = [m("lat.bucket", t, t * per, le=le, svc="web", host=h)
               for t in (0.0, 1.0) for h in ("a", "b")
               for le, per in (("0.1", 2), ("0.5", 8), ("+Inf", 10))]
    got = at(expr_rule("histogram_quantile(0.5, sum by (le, svc) (rate(lat.bucket[5m])))"),
             samples, 1.0)
    assert got == {"svc=web": pytest.approx(0.1 + 0.4 * (10 - 4) / 12)}


class TestEventTime:
    def test_samples_of_one_instant_are_applied_before_evaluating(self) -> None:
        """A new numerator with the old denominator is never seen: no fire in between."""
        ev = Evaluator(expr_rule("err / req", "> 0.05"))
        out = ev.ingest([m("err", 0, 1), m("req", 0, 100)], now=0)
        out += ev.ingest([m("err", 1, 50)], now=1)  # one message ...
        out += ev.ingest([m("req", 1, 10_000)], now=1)  # ... and the next, same instant
        out += ev.ingest([m("err", 2, 1)], now=2)
        out += ev.advance(2)
        assert out == []

    def test_last_instant_waits_for_a_timer_run(self) -> None:
        """The newest instant is evaluated when the engine's timer comes (next_deadline)."""
        ev = Evaluator(expr_rule("err / req", "> 0.05"))
        assert ev.ingest([m("err", 5, 10), m("req", 5, 100)], now=5) == []
        assert ev.next_deadline() == 5.0
        assert states(ev.advance(5)) == [("firing", 5.0, {})]

    def test_an_operand_holds_its_value_until_stale(self) -> None:
        """err is not sampled again: its 1 holds with each new req, until missing.after."""
        got = states(list(replay(Evaluator(expr_rule("err / req", "> 0.05",
                                                     missing="{after: 60s}")),
                                 [m("err", 0, 1), m("req", 0, 10), m("req", 30, 12)],
                                 until=100)))
        assert got == [("firing", 0.0, {}), ("resolved", 60.0, {})]

    def test_for_and_keep_firing_for_apply_to_the_output(self) -> None:
        """for 10s fires at 10 on held values; keep_firing_for 5s resolves 5s after it cleared."""
        samples = [m("x", t, 9 if t < 20 else 1) for t in range(0, 31, 5)]
        got = states(list(replay(Evaluator(expr_rule("x * 1", "> 5", **{
            "for": "10s", "keep_firing_for": "5s"})), samples)))
        assert got == [("firing", 10.0, {}), ("resolved", 25.0, {})]

    def test_a_vanished_output_resolves_at_once(self) -> None:
        """sum by (svc) loses its only input at staleness: the alert resolves then."""
        got = states(list(replay(Evaluator(expr_rule("sum by (svc) (x)", "> 5",
                                                     missing="{after: 30s}")),
                                 [m("x", 0, 9, svc="a"), m("y", 100, 0)])))
        assert got == [("firing", 0.0, {"svc": "a"}), ("resolved", 30.0, {"svc": "a"})]

    def test_absent_fires_at_the_first_instant_and_resolves_when_seen(self) -> None:
        """absent(up{job="db"}) fires at the first sample anywhere, resolves when up appears."""
        got = states(list(replay(Evaluator(expr_rule('absent(up{job="db"})', "> 0")),
                                 [m("other", 0, 1), m("up", 20, 1, job="db")])))
        assert got == [("firing", 0.0, {"job": "db"}), ("resolved", 20.0, {"job": "db"})]

    def test_a_sample_leaving_the_window_changes_the_value(self) -> None:
        """max_over_time(x[10s]): the 9 at 0 leaves the window at 10, with no new sample."""
        got = states(list(replay(Evaluator(expr_rule("max_over_time(x[10s])", "> 5")),
                                 [m("x", 0, 9), m("x", 5, 1)], until=20)))
        assert got == [("firing", 0.0, {}), ("resolved", 10.0, {})]

    def test_end_series_is_staleness_at_that_instant(self) -> None:
        """The staleness-marker hook: the series is gone from the next evaluation on."""
        ev = Evaluator(expr_rule("sum(x)", "> 5"))
        out = ev.ingest([m("x", 0, 9, host="a")], now=0) + ev.advance(0)
        assert ev._expr is not None
        ev._expr.end_series("x", {"host": "a"}, 3.0)
        out += ev.advance(3)
        assert states(out) == [("firing", 0.0, {}), ("resolved", 3.0, {})]

    def test_a_staleness_marker_on_the_bus_ends_an_operand_at_its_ts(self) -> None:
        """A sample with stale: true (the prometheus sampler's marker) drops the series at
        its ts: the sum loses it at once instead of holding it until missing.after."""
        marker = MetricSample(name="x", value=0, ts=3, labels={"host": "a"}, stale=True)
        got = states(list(replay(Evaluator(expr_rule("sum(x)", "> 5")),
                                 [m("x", 0, 9, host="a"), m("x", 0, 1, host="b"), marker],
                                 until=10)))
        assert got == [("firing", 0.0, {}), ("resolved", 3.0, {})]

    def test_division_by_zero_is_the_largest_float(self) -> None:
        """x / 0 is +Inf in PromQL: it fires, and the trigger carries a finite value."""
        got = list(replay(Evaluator(expr_rule("x / y", "> 1")), [m("x", 0, 1), m("y", 0, 0)]))
        assert [t.state for t in got] == ["firing"] and got[0].value > 1e308


class TestRecording:
    def test_a_recording_rule_computes_samples_of_its_name(self) -> None:
        """record: service.error_ratio publishes the expression's series as samples."""
        ev = Evaluator(load_rules_text(
            "rules:\n  - name: ratio\n    record: service.error_ratio\n"
            "    expr: sum by (svc) (err) / sum by (svc) (req)\n"))
        ev.ingest(HOSTS, now=0)
        ev.advance(0)
        got = {(s.name, tuple(s.labels.items()), s.ts, round(s.value, 6))
               for s in ev.take_recorded()}
        assert got == {("service.error_ratio", (("svc", "web"),), 0.0, 0.1),
                       ("service.error_ratio", (("svc", "db"),), 0.0, 0.2)}
        assert ev.take_recorded() == [] and ev.stats().series == 0

    @pytest.mark.parametrize(("body", "message"), [
        ("record: a.b\n    metric: m\n", "record: \"a.b\" needs expr:"),
        ("record: a.b\n    expr: x\n    when: '> 1'\n", "when: \"> 1\" is not available for "
                                                         "recording rules"),
        ("expr: x\n", "missing required key 'when'"),
        ("expr: x\n    metric: m\n    when: '> 1'\n", "metric: \"m\" cannot be used together "
                                                       "with expr:"),
        ("expr: x\n    labels: {a: b}\n    when: '> 1'\n", "is not available for expr rules"),
        ("record: 'a b'\n    expr: x\n", "record: \"a b\" does not match"),
    ])
    def test_shape_mistakes(self, body: str, message: str) -> None:
        """A recording rule needs expr and no threshold; expr excludes metric and labels."""
        with pytest.raises(InvalidFileError) as caught:
            load_rules_text(f"rules:\n  - name: r\n    {body}")
        assert message in str(caught.value)


class TestLoaderMistakes:
    @pytest.mark.parametrize(("expr", "column", "message"), [
        ("rate(x)", 17, "rate needs a range vector (e.g. x[5m]) here, not an instant vector"),
        ("sum(x[5m])", 16, "sum needs an instant vector, not a range vector"),
        ("x + y[5m]", 16, "+ needs an instant vector or a number, not a range vector"),
        ("rat(x[5m])", 12, "unknown function rat (did you mean rate?)"),
        ("sum by (a) (x) / on(b) sum by (a) (y)", 32,
         "on(b) can never match: the left side has only a"),
        ("x > 1", 14, "comparisons are not part of expr"),
        ("sum(x", 17, "expected ')', found the end of the expression"),
        ('x{a=~"("}', 17, 'regex "(" does not compile'),
        ("x[5m]", 12, "an expr must give an instant vector, not a range vector"),
        ("histogram_quantile(0.9, sum(rate(x[5m])))", 36, "histogram_quantile needs the le label"),
        ("x group_left y", 14, "group_left is not supported"),
    ])
    def test_expr_mistakes_point_at_their_column(self, expr: str, column: int,
                                                 message: str) -> None:
        """file:line:col of the token at fault, inside the quoted expression."""
        with pytest.raises(InvalidFileError) as caught:
            load_rules_text(f"rules:\n  - name: r\n    expr: '{expr}'\n    when: '> 1'\n",
                            "r.yaml")
        assert str(caught.value).startswith(f"r.yaml:3:{column}: rule 'r': expr: {message}")

    def test_plain_scalars_count_from_the_value(self) -> None:
        """An unquoted expression: the column counts from its first character."""
        with pytest.raises(InvalidFileError) as caught:
            load_rules_text("rules:\n  - name: r\n    expr: sum(rate(x))\n    when: '> 1'\n",
                            "r.yaml")
        assert str(caught.value).startswith("r.yaml:3:20: rule 'r': expr: rate needs")


class TestEngineSeams:
    def test_reload_keeps_an_unchanged_rule_and_resolves_a_changed_one(self) -> None:
        """Same fingerprint: still firing, no trigger. Changed: resolved, then evaluated anew."""
        ev = Evaluator(expr_rule("sum(x)", "> 5"))
        ev.ingest([m("x", 0, 9)], now=0)
        assert [t.state for t in ev.advance(0)] == ["firing"]
        assert ev.replace_rules(expr_rule("sum(x)", "> 5"), now=1) == []
        assert ev.firing("r")
        assert [t.state for t in ev.replace_rules(expr_rule("sum(x)", "> 50"), now=2)] == \
            ["resolved"]
        assert not ev.firing("r")

    def test_a_firing_output_survives_a_restart(self) -> None:
        """Checkpointed states of expr outputs are restored: no second firing trigger."""
        again = restarted(expr_rule("sum by (svc) (x)", "> 5"))
        assert [t.labels for t in again.firing("r")] == [{"svc": "a"}]
        assert again.ingest([m("x", 1, 9, svc="a")], now=1) + again.advance(1) == []

    def test_partition_names_the_rules_that_need_every_series(self) -> None:
        """Aggregations need all their inputs on one engine; per-series expressions do not."""
        assert expr_rule("sum(x)").rules[0].partition == "rule:r"
        assert expr_rule("x / y").rules[0].partition == "rule:r"
        assert expr_rule("rate(x[5m]) * 8").rules[0].partition is None
        assert expr_rule("x").rules[0].expr.inputs == frozenset({"x"})  # type: ignore[union-attr]

    def test_an_engine_evaluates_only_the_partitions_it_owns(self) -> None:
        """owns() decides a cross-series rule by its partition, a per-series one by series."""
        def owns(key: str) -> bool:
            return key in ("rule:r", 'x{host="a"}')
        mine = Evaluator(expr_rule("sum(x)"), owns=owns)
        theirs = Evaluator(expr_rule("x * 1"), owns=owns)
        for ev in (mine, theirs):
            ev.ingest([m("x", 0, 1, host="a"), m("x", 0, 2, host="b")], now=0)
            ev.advance(0)
        assert outputs(mine) == {"": 3} and outputs(theirs) == {"host=a": 1}


def test_a_late_sample_counts_from_the_instant_already_evaluated() -> None:
    """Another sampler's sample at 9 arrives after 10 was evaluated: applied at 10, not lost."""
    ev = Evaluator(expr_rule("sum(x)", "> 5"))
    out = ev.ingest([m("x", 10, 1, host="a")], now=10) + ev.advance(10)
    out += ev.ingest([m("x", 9, 8, host="b")], now=10) + ev.advance(10)
    assert states(out) == [("firing", 10.0, {})]
    assert ev._expr is not None and ev._expr.late == 1


def test_a_restored_output_whose_inputs_never_return_resolves() -> None:
    """Restored firing, then no input: resolved when its inputs would have gone stale."""
    again = restarted(expr_rule("sum by (svc) (x)", "> 5", missing="{after: 30s}"))
    assert again.next_deadline() == 30.0
    assert states(again.ingest([m("y", 10, 1)], now=10) + again.advance(40)) == [
        ("resolved", 30.0, {"svc": "a"})]
