"""expr rules against a from-scratch reference (tests/expr_reference.py): random expressions
and samples, the same output series and values at every second."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.expr.check import compile_expr
from flarebus.engine.language.expr.lexer import ExprError
from flarebus.engine.language.expr.operands import key_of
from flarebus.engine.language.rulefile import load_rules_text
from flarebus.events import MetricSample
from tests.expr_reference import Sample, Vector, as_outputs, evaluate, same

LOOKBACK = 5
LABELS = ("host", "svc")
RANGE_FNS = ("rate", "increase", "delta", "deriv", "avg_over_time", "min_over_time",
             "max_over_time", "sum_over_time", "count_over_time")


def selectors() -> st.SearchStrategy[str]:
    matcher = st.sampled_from(["", '{host="h1"}', '{svc!="x"}', '{host=~"h[12]"}',
                               '{svc!~"y"}'])
    return st.builds(lambda n, m: n + m, st.sampled_from(["a.b", "c"]), matcher)


def label_list() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(LABELS), max_size=2, unique=True).map(", ".join)


def instant(depth: int) -> st.SearchStrategy[str]:
    leaves = st.one_of(
        selectors(),
        st.builds(lambda f, s, r: f"{f}({s}[{r}s])", st.sampled_from(RANGE_FNS), selectors(),
                  st.sampled_from([3, 5])),
        st.builds(lambda q, s: f"quantile_over_time({q}, {s}[4s])",
                  st.sampled_from([0, 0.5, 0.9]), selectors()),
        st.builds(lambda s: f"predict_linear({s}[4s], 10)", selectors()),
        st.builds(lambda s: f"absent({s})", selectors()),
        st.builds(lambda q, inner: f"histogram_quantile({q}, {inner})",
                  st.sampled_from([0.5, 0.9]),
                  st.sampled_from(["sum by (le) (h)", "h", "sum by (le, svc) (rate(h[5s]))"])),
    )
    if depth == 0:
        return leaves
    sub = instant(depth - 1)
    return st.one_of(
        leaves,
        st.builds(lambda op, g, labels, e: f"{op} {g} ({labels}) ({e})",
                  st.sampled_from(["sum", "avg", "min", "max", "count"]),
                  st.sampled_from(["by", "without"]), label_list(), sub),
        st.builds(lambda lhs, op, mod, rhs: f"({lhs}) {op} {mod} ({rhs})", sub,
                  st.sampled_from(["+", "-", "*", "/"]),
                  st.sampled_from(["", "on(host)", "on(svc)", "ignoring(svc)", "on()"]), sub),
        st.builds(lambda e, op, c, left: f"{c} {op} ({e})" if left else f"({e}) {op} {c}",
                  sub, st.sampled_from(["+", "-", "*", "/"]), st.sampled_from([0, 2, -1.5]),
                  st.booleans()),
        st.builds(lambda e: f"-({e})", sub),
    )


def samples() -> st.SearchStrategy[list[Sample]]:
    one = st.tuples(st.sampled_from(["a.b", "c"]),
                    st.fixed_dictionaries({"host": st.sampled_from(["h1", "h2", "h3"]),
                                           "svc": st.sampled_from(["x", "y"])}),
                    st.integers(0, 24).map(float), st.integers(-3, 10).map(float))
    bucket = st.tuples(st.just("h"),
                       st.fixed_dictionaries({"le": st.sampled_from(["1", "2.5", "+Inf"]),
                                              "svc": st.sampled_from(["x", "y"])}),
                       st.integers(0, 24).map(float), st.integers(0, 10).map(float))
    return st.lists(st.one_of(one, bucket), min_size=1, max_size=40).map(
        lambda xs: sorted(xs, key=lambda s: s[2]))


def outputs(ev: Evaluator) -> Vector:
    return {key_of(s.labels): s.value for s in ev.states()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instant(2), samples())
def test_incremental_runtime_matches_the_reference(text: str, data: list[Sample]) -> None:
    """Random expressions over random samples: the same output series, same values, each second."""
    try:
        program = compile_expr(text)
    except ExprError:
        assume(False)
        return
    ev = Evaluator(load_rules_text(
        f"rules:\n  - {{name: r, expr: '{text}', when: '> 1e300', "
        f"missing: {{after: {LOOKBACK}s}}}}\n"))
    start = data[0][2]
    for t in range(int(start), 40):
        ev.ingest([MetricSample(name=n, labels=dict(lb), ts=ts, value=v)
                   for n, lb, ts, v in data if ts == t], now=float(t))
        ev.advance(float(t))
        expected = as_outputs(evaluate(program.tree, data, float(t), LOOKBACK))
        assert same(outputs(ev), expected), (t, outputs(ev), expected)
