"""A from-scratch reference for expr rules: every expression recomputed at an instant from
all the samples, with none of the runtime's incremental bookkeeping.

Semantics as docs/rules.md states them: an instant selector's series holds its
last sample until ``lookback`` after it; a range function's value for a series
is computed at that series' own instants (its samples, and each sample leaving
the window) and holds in between.
"""

from __future__ import annotations

import math
import sys

from flarebus.engine.language.expr.ast import Aggregate, Binary, Call, Expr, Number, Selector
from flarebus.engine.language.expr.functions import (
    FUNCTIONS,
    aggregate,
    arithmetic,
    bucket_quantile,
)

Sample = tuple[str, dict[str, str], float, float]  # name, labels, ts, value
Vector = dict[tuple[tuple[str, str], ...], float]


def _key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if v))


def _series(sel: Selector, samples: list[Sample], t: float) -> dict[tuple[tuple[str, str], ...],
                                                                      list[tuple[float, float]]]:
    out: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for name, labels, ts, value in samples:
        if ts <= t and sel.matches(name, labels):
            points = out.setdefault(_key(labels), [])
            if points and ts == points[-1][0]:
                points[-1] = (ts, value)  # one sample per instant: the later one wins
            elif not points or ts > points[-1][0]:
                points.append((ts, value))
    return out


def evaluate(tree: Expr, samples: list[Sample], t: float, lookback: float) -> Vector:
    """The expression's output at ``t``: labels (as a sorted key) -> value."""
    if isinstance(tree, Selector):
        return {k: pts[-1][1] for k, pts in _series(tree, samples, t).items()
                if t - pts[-1][0] < lookback}
    if isinstance(tree, Binary):
        return _binary(tree, samples, t, lookback)
    if isinstance(tree, Aggregate):
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for k, v in evaluate(tree.expr, samples, t, lookback).items():
            labels = dict(k)
            kept = {n: x for n, x in labels.items() if (n in tree.labels) != tree.without}
            groups.setdefault(_key(kept), []).append(v)
        return {g: aggregate(tree.op, vs) for g, vs in groups.items()}
    assert isinstance(tree, Call)
    if tree.fn == "absent":
        arg = tree.args[0]
        if evaluate(arg, samples, t, lookback):
            return {}
        assert isinstance(arg, Selector)
        return {_key({m.label: m.value for m in arg.matchers if m.op == "="}): 1.0}
    if tree.fn == "histogram_quantile":
        phi = tree.args[0]
        assert isinstance(phi, Number)
        buckets: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        for k, v in evaluate(tree.args[1], samples, t, lookback).items():
            labels = dict(k)
            try:
                le = float(labels.pop("le", ""))
            except ValueError:
                continue
            buckets.setdefault(_key(labels), []).append((le, v))
        return {g: bucket_quantile(phi.value, b) for g, b in buckets.items()}
    return _range_function(tree, samples, t)


def _range_function(tree: Call, samples: list[Sample], t: float) -> Vector:
    sel = next(a for a in tree.args if isinstance(a, Selector))
    assert sel.range is not None
    fn = FUNCTIONS[tree.fn].range_fn
    assert fn is not None
    extra = [a.value for a in tree.args if isinstance(a, Number)]
    out: Vector = {}
    for k, pts in _series(sel, samples, t).items():
        instants = [ts for ts, _ in pts] + [ts + sel.range for ts, _ in pts]
        at = max(i for i in instants if i <= t)  # the series' own last instant
        window = [(ts, v) for ts, v in pts if at - sel.range < ts <= at]
        value = fn(window, at, sel.range, *extra) if window else None
        if value is not None:
            out[k] = value
    return out


def _binary(tree: Binary, samples: list[Sample], t: float, lookback: float) -> Vector:
    if isinstance(tree.lhs, Number):
        rhs = evaluate(tree.rhs, samples, t, lookback)
        return {k: arithmetic(tree.op, tree.lhs.value, v) for k, v in rhs.items()}
    lhs = evaluate(tree.lhs, samples, t, lookback)
    if isinstance(tree.rhs, Number):
        c = tree.rhs.value
        return {k: arithmetic(tree.op, v, c) for k, v in lhs.items()}
    rhs = evaluate(tree.rhs, samples, t, lookback)

    def signature(k: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        labels = dict(k)
        if tree.on is not None:
            return tuple((n, labels.get(n, "")) for n in sorted(tree.on))
        if tree.ignoring is not None:
            return _key({n: v for n, v in labels.items() if n not in tree.ignoring})
        return k
    left: dict[tuple[tuple[str, str], ...], list[tuple[tuple[str, str], ...]]] = {}
    right: dict[tuple[tuple[str, str], ...], list[tuple[tuple[str, str], ...]]] = {}
    for k in lhs:
        left.setdefault(signature(k), []).append(k)
    for k in rhs:
        right.setdefault(signature(k), []).append(k)
    out: Vector = {}
    for sig, ls in left.items():
        rs = right.get(sig, [])
        if len(ls) != 1 or len(rs) != 1:
            continue
        labels = dict(ls[0])
        if tree.on is not None:
            labels = {n: v for n, v in labels.items() if n in tree.on}
        elif tree.ignoring is not None:
            labels = {n: v for n, v in labels.items() if n not in tree.ignoring}
        out[_key(labels)] = arithmetic(tree.op, lhs[ls[0]], rhs[rs[0]])
    return out


def as_outputs(vector: Vector) -> Vector:
    """What a rule's output series carry (expr/runtime.py): NaN is no result, ±Inf the
    largest float of its sign."""
    return {k: math.copysign(sys.float_info.max, v) if math.isinf(v) else v
            for k, v in vector.items() if not math.isnan(v)}


def same(a: Vector, b: Vector) -> bool:
    """Equal keys and values (NaN equals NaN; tiny float differences from summing order)."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]
        or math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9) for k in a)
