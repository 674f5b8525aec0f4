"""The incremental operators: each keeps its output vector and recomputes only what changed.

A node's ``evaluate(t)`` first evaluates its children, then returns the keys of
its own output that changed at ``t`` (appeared, moved or vanished); its
``value`` and ``labels`` hold the whole output, by key. Nothing is recomputed
for a series or group none of whose inputs changed: an aggregation updates
the groups of the changed inputs only (``sum``/``avg``/``count`` by adding the
difference, ``min``/``max`` over the group), vector matching re-matches only
the changed signatures. So one sample costs O(depth), not O(series), and a
batch of samples at one instant is applied before anything is evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from flarebus.engine.language.expr.ast import Aggregate, Binary, Call, Expr, Number, Selector
from flarebus.engine.language.expr.functions import (
    FUNCTIONS,
    aggregate,
    arithmetic,
    bucket_quantile,
)
from flarebus.engine.language.expr.operands import Key, Leaf, key_of

#: A group's running sum is recomputed from scratch after this many updates (bounds drift).
RESUM_EVERY = 1024


class Node(Protocol):
    value: dict[Key, float]
    labels: dict[Key, dict[str, str]]

    def evaluate(self, t: float) -> list[Key]: ...


class ScalarOp:
    """``v op c`` or ``c op v`` for every series of ``v`` (labels kept)."""

    def __init__(self, op: str, child: Node, const: float, const_left: bool) -> None:
        self.op, self.child, self.const, self.const_left = op, child, const, const_left
        self.value: dict[Key, float] = {}
        self.labels = child.labels  # the same series as the child: share its labels

    def evaluate(self, t: float) -> list[Key]:
        changed = self.child.evaluate(t)
        src = self.child.value
        for key in changed:
            v = src.get(key)
            if v is None:
                self.value.pop(key, None)
            elif self.const_left:
                self.value[key] = arithmetic(self.op, self.const, v)
            else:
                self.value[key] = arithmetic(self.op, v, self.const)
        return changed


class VectorMatch:
    """``a op b``: one-to-one on all labels, ``on(...)`` or ``ignoring(...)``.

    A signature with more than one series on a side gives no result (Prometheus
    fails the whole evaluation there: "many-to-many matching not allowed").
    """

    def __init__(self, op: str, lhs: Node, rhs: Node, on: tuple[str, ...] | None,
                 ignoring: tuple[str, ...] | None) -> None:
        self.op, self.lhs, self.rhs = op, lhs, rhs
        self.on = tuple(sorted(on)) if on is not None else None
        self.ignoring = frozenset(ignoring) if ignoring is not None else None
        self.value: dict[Key, float] = {}
        self.labels: dict[Key, dict[str, str]] = {}
        self.sides: tuple[dict[Key, Key], dict[Key, Key]] = ({}, {})  # key -> signature
        self.groups: tuple[dict[Key, set[Key]], dict[Key, set[Key]]] = ({}, {})
        self.out: dict[Key, Key] = {}  # signature -> output key

    def signature(self, labels: dict[str, str]) -> Key:
        if self.on is not None:
            return tuple((name, labels.get(name, "")) for name in self.on)
        if self.ignoring is not None:
            return tuple(sorted((k, v) for k, v in labels.items() if k not in self.ignoring))
        return key_of(labels)

    def evaluate(self, t: float) -> list[Key]:
        touched: set[Key] = set()
        for side, node in enumerate((self.lhs, self.rhs)):
            sigs, groups = self.sides[side], self.groups[side]
            for key in node.evaluate(t):
                old = sigs.pop(key, None)
                if old is not None:
                    members = groups[old]
                    members.discard(key)
                    if not members:
                        del groups[old]
                    touched.add(old)
                if key in node.value:
                    sig = self.signature(node.labels[key])
                    sigs[key] = sig
                    groups.setdefault(sig, set()).add(key)
                    touched.add(sig)
        changed = []
        for sig in touched:
            old_out = self.out.pop(sig, None)
            if old_out is not None:
                del self.value[old_out]
                del self.labels[old_out]
                changed.append(old_out)
            left, right = self.groups[0].get(sig), self.groups[1].get(sig)
            if not left or not right or len(left) > 1 or len(right) > 1:
                continue
            lk, rk = next(iter(left)), next(iter(right))
            labels = self.result_labels(self.lhs.labels[lk])
            out = key_of(labels)
            self.value[out] = arithmetic(self.op, self.lhs.value[lk], self.rhs.value[rk])
            self.labels[out] = labels
            self.out[sig] = out
            changed.append(out)
        return changed

    def result_labels(self, left: dict[str, str]) -> dict[str, str]:
        if self.on is not None:
            return {k: left[k] for k in self.on if left.get(k)}
        if self.ignoring is not None:
            return {k: v for k, v in left.items() if k not in self.ignoring}
        return left


class Aggregation:
    """``op by/without (labels) (child)``, per group, updating only the changed groups."""

    def __init__(self, op: str, child: Node, labels: tuple[str, ...], without: bool) -> None:
        self.op, self.child = op, child
        self.by = tuple(sorted(labels))
        self.without = frozenset(labels) if without else None
        self.value: dict[Key, float] = {}
        self.labels: dict[Key, dict[str, str]] = {}
        self.members: dict[Key, dict[Key, float]] = {}
        self.sums: dict[Key, list[float]] = {}  # group -> [running sum, updates since exact]
        # input key -> (its group, the group's members, the group's running sum)
        self.cache: dict[Key, tuple[Key, dict[Key, float], list[float]]] = {}
        self.running = op in ("sum", "avg")

    def group(self, labels: dict[str, str]) -> Key:
        if self.without is not None:
            return tuple(sorted((k, v) for k, v in labels.items() if k not in self.without))
        return tuple((k, labels[k]) for k in self.by if labels.get(k))

    def evaluate(self, t: float) -> list[Key]:
        src = self.child.value
        dirty: set[Key] = set()
        running = self.running
        cache = self.cache
        src_get, cache_get, touch = src.get, cache.get, dirty.add  # (the hot loop)
        for key in self.child.evaluate(t):
            v = src_get(key)
            place = cache_get(key)
            if place is None:
                if v is None:
                    continue
                g = self.group(self.child.labels[key])
                place = cache[key] = (g, self.members.setdefault(g, {}),
                                      self.sums.setdefault(g, [0.0, 0.0]))
            g, members, acc = place
            old = members.get(key, 0.0)
            if v is None:
                del members[key]
                del cache[key]
                v = 0.0
            else:
                members[key] = v
            if running and acc[1] != INEXACT:
                diff = v - old
                if diff - diff == 0.0 and acc[1] < RESUM_EVERY:  # finite: a running sum is exact
                    acc[0] += diff
                    acc[1] += 1
                else:
                    acc[1] = INEXACT
            touch(g)
        for g in dirty:
            members = self.members[g]
            if not members:
                del self.members[g]
                del self.sums[g]
                self.value.pop(g, None)
                self.labels.pop(g, None)
                continue
            if running:
                acc = self.sums[g]
                if acc[1] == INEXACT or acc[0] - acc[0] != 0.0:
                    acc[0], acc[1] = math.fsum(members.values()), 0.0
                total = acc[0]
                self.value[g] = total if self.op == "sum" else total / len(members)
            else:
                self.value[g] = aggregate(self.op, list(members.values()))
            if g not in self.labels:
                self.labels[g] = dict(g)
        return list(dirty)


INEXACT = -1.0  # a running sum to recompute (a non-finite value, or many updates)


class Absent:
    """``absent(v)``: one series, valued 1, while ``v`` has none."""

    def __init__(self, child: Node, labels: dict[str, str]) -> None:
        self.child = child
        self.key = key_of(labels)
        self.value: dict[Key, float] = {}
        self.labels: dict[Key, dict[str, str]] = {self.key: labels}

    def evaluate(self, t: float) -> list[Key]:
        self.child.evaluate(t)
        absent = not self.child.value
        if absent == (self.key in self.value):
            return []
        if absent:
            self.value[self.key] = 1.0
        else:
            del self.value[self.key]
        return [self.key]


class HistogramQuantile:
    """``histogram_quantile(φ, v)``: per group of ``v``'s labels without ``le``."""

    def __init__(self, phi: float, child: Node) -> None:
        self.phi, self.child = phi, child
        self.value: dict[Key, float] = {}
        self.labels: dict[Key, dict[str, str]] = {}
        self.group_of: dict[Key, Key] = {}
        self.members: dict[Key, dict[Key, tuple[float, float]]] = {}

    def evaluate(self, t: float) -> list[Key]:
        src = self.child.value
        dirty: set[Key] = set()
        for key in self.child.evaluate(t):
            labels = self.child.labels.get(key)
            g = self.group_of.get(key)
            if g is None and labels is not None:
                g = self.group_of[key] = tuple((k, v) for k, v in key if k != "le")
            if g is None:
                continue
            members = self.members.setdefault(g, {})
            members.pop(key, None)
            v = src.get(key)
            le = _bound(labels.get("le", "") if labels is not None else "")
            if v is None or le is None:
                del self.group_of[key]
            else:
                members[key] = (le, v)
            dirty.add(g)
        for g in dirty:
            members = self.members[g]
            if not members:
                del self.members[g]
                self.value.pop(g, None)
                self.labels.pop(g, None)
                continue
            self.value[g] = bucket_quantile(self.phi, list(members.values()))
            self.labels[g] = dict(g)
        return list(dirty)


def _bound(text: str) -> float | None:
    try:
        return float(text)  # "+Inf" parses, as in Prometheus
    except ValueError:
        return None


LeafFactory = Callable[[Selector, Callable[..., float | None] | None, tuple[float, ...]], Leaf]


def build(tree: Expr, leaf: LeafFactory) -> Node:
    """The operator tree of a checked expression (see check.py); ``leaf`` makes the leaves."""
    if isinstance(tree, Selector):
        return leaf(tree, None, ())
    if isinstance(tree, Binary):
        if isinstance(tree.lhs, Number):
            return ScalarOp(tree.op, build(tree.rhs, leaf), tree.lhs.value, True)
        if isinstance(tree.rhs, Number):
            return ScalarOp(tree.op, build(tree.lhs, leaf), tree.rhs.value, False)
        return VectorMatch(tree.op, build(tree.lhs, leaf), build(tree.rhs, leaf), tree.on,
                           tree.ignoring)
    if isinstance(tree, Aggregate):
        return Aggregation(tree.op, build(tree.expr, leaf), tree.labels, tree.without)
    assert isinstance(tree, Call)
    if tree.fn == "absent":
        arg = tree.args[0]
        labels = {m.label: m.value for m in arg.matchers if m.op == "=" and m.value} \
            if isinstance(arg, Selector) else {}
        return Absent(build(arg, leaf), labels)
    if tree.fn == "histogram_quantile":
        phi = tree.args[0]
        assert isinstance(phi, Number)
        return HistogramQuantile(phi.value, build(tree.args[1], leaf))
    sig = FUNCTIONS[tree.fn]
    scalars = tuple(a.value for a in tree.args if isinstance(a, Number))
    selector = next(a for a in tree.args if isinstance(a, Selector))
    return leaf(selector, sig.range_fn, scalars)

