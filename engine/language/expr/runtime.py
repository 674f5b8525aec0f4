"""Expression rules at run time: routing samples to operands, evaluating at instants, and
handing each output series' value to the same state machine as plain rules.

Event time, as for plain rules: an expression is evaluated at every instant
at which one of its operands changed (a sample, a series going stale, a sample
leaving a range window), and at no other. Samples sharing a timestamp are all
applied before the expression is evaluated at that instant: the evaluation of
instant ``T`` waits until a sample later than ``T`` arrives, or a timer run
(``advance``) reaches ``T`` — ``next_event`` tells the engine to come back at
once. Each output series then goes through ``Machine.observe`` exactly like a
plain rule's sample; an output series that vanishes is stale at that instant
(``missing.then`` decides what that means, as for a plain series).

A rule is evaluated once at the first instant the evaluator sees (or the
reload that brought it), so ``absent()`` of a series never seen fires.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flarebus.engine.language.compiler import Rule
from flarebus.engine.language.expr.ast import Selector
from flarebus.engine.language.expr.nodes import Node, build
from flarebus.engine.language.expr.operands import INF, Heap, Key, Leaf, key_of
from flarebus.engine.language.machine import Machine
from flarebus.engine.language.series import FIRING, INACTIVE, Check, Entry, SavedState, State
from flarebus.events import MetricSample, Trigger, WireSample, series_key

Plain = Callable[[list[Any], float], list[Trigger]]


class RuleRuntime:
    """One expr rule: its operator tree, and one Entry (with its states) per output series."""

    def __init__(self, rule: Rule, checks: list[Check], heap: Heap, seq: itertools.count[int],
                 owns: Callable[[str], bool] | None) -> None:
        self.outputs: dict[Key, Entry] = {}
        self.rule = rule
        self.checks: list[Check] = []
        self.adopt(rule, checks)
        self.name = rule.record or rule.name
        self.leaves: list[Leaf] = []
        self._heap, self._seq = heap, seq
        assert rule.expr is not None
        self._owns = None if owns is None or rule.expr.cross_series else owns
        self.root: Node = build(rule.expr.tree, self._leaf)
        #: outputs restored from a checkpoint, not computed since: key -> when they vanish
        self.unconfirmed: dict[Key, float] = {}

    def adopt(self, rule: Rule, checks: list[Check]) -> None:
        """Run with these (equal) rule and checks, as after a reload that left the rule as is."""
        assert rule.expr is not None
        for check in checks:
            check.after = INF  # staleness of an output is its vanishing, decided here
            check.metric_name = rule.record or rule.expr.text
        by_stage = {c.stage: c for c in checks}
        for entry in self.outputs.values():
            for st in entry.states:
                st.check = by_stage[st.check.stage]
        self.rule, self.checks = rule, checks

    def _leaf(self, selector: Selector, fn: Callable[..., float | None] | None,
              extra: tuple[float, ...]) -> Leaf:
        owns = self._owns
        name = selector.name or ""
        accept = None if owns is None else (lambda labels: owns(series_key(name, labels)))
        leaf = Leaf(selector, self.rule.missing.after, self._heap, self._seq, accept, fn, extra)
        leaf.runtime = self
        self.leaves.append(leaf)
        return leaf

    def entry(self, key: Key, labels: dict[str, str]) -> Entry:
        entry = self.outputs.get(key)
        if entry is None:
            entry = Entry(key, self.name, dict(labels), series_key(self.name, labels))
            entry.set_states([State(c, entry) for c in self.checks])
            self.outputs[key] = entry
        return entry


class ExprEvaluator:
    """Every expr rule of a rule set; the Evaluator hands it samples, timers and status."""

    def __init__(self, machine: Machine, forget: Callable[[Entry], None],
                 owns: Callable[[str], bool] | None) -> None:
        self._machine = machine
        self._forget = forget
        self._owns = owns
        self._heap: Heap = []
        self._seq = itertools.count()
        self.runtimes: dict[str, RuleRuntime] = {}
        self._by_name: dict[str, list[Leaf]] = {}
        self._dirty: set[RuleRuntime] = set()
        self._pending = INF  # the instant whose samples are applied but not yet evaluated
        self.clock = -INF  # the last instant evaluated
        self.recorded: list[MetricSample] = []
        self.late = 0  # samples older than an instant already evaluated
        self.plain_names: set[str] = set()  # metrics the plain rules read (Evaluator sets it)

    # ------------------------------------------------------------------ rules

    def install(self, rules: Iterable[tuple[Rule, list[Check]]], now: float | None) -> None:
        """(Re)build the runtimes: an unchanged rule keeps its operands and outputs."""
        old = self.runtimes
        self.runtimes = {}
        fresh = []
        for rule, checks in rules:
            if self._owns is not None and rule.partition is not None \
                    and not self._owns(rule.partition):
                continue  # another engine evaluates this rule (see Rule.partition)
            kept = old.get(rule.name)
            if kept is not None and kept.rule.fingerprint == rule.fingerprint:
                kept.adopt(rule, checks)  # the tree and its data stay as they are
                self.runtimes[rule.name] = kept
                continue
            runtime = RuleRuntime(rule, checks, self._heap, self._seq, self._owns)
            self.runtimes[rule.name] = runtime
            fresh.append(runtime)
        self._by_name = {}
        for runtime in self.runtimes.values():
            for leaf in runtime.leaves:
                assert leaf.selector.name is not None
                self._by_name.setdefault(leaf.selector.name, []).append(leaf)
        self._dirty = {r for r in self._dirty if r in self.runtimes.values()} | set(fresh)
        start = now if now is not None else (self.clock if self.clock > -INF else None)
        if fresh and start is not None:
            self._pending = min(self._pending, max(start, self.clock))

    def retired(self, old: dict[str, RuleRuntime], now: float, out: list[Trigger]) -> None:
        """Resolve what fired for rules that changed or went; their states are deleted."""
        for name, runtime in old.items():
            if self.runtimes.get(name) is runtime:
                continue
            for entry in runtime.outputs.values():
                for st in entry.states:
                    if st.phase == FIRING:
                        out.append(self._machine.trigger(st, "resolved", now))
                    self._machine.retire(st)
        alive = set(self.runtimes.values())
        self._heap[:] = [e for e in self._heap if e[2].runtime in alive]
        heapq.heapify(self._heap)

    # ------------------------------------------------------------------ input

    def next_event(self) -> float:
        heap = self._heap
        return min(self._pending, heap[0][0] if heap else INF)

    def ingest(self, samples: Iterable[MetricSample | WireSample], now: float,
               plain: Plain) -> list[Trigger]:
        """Samples in order: expr operands take theirs, the plain rules get runs of theirs."""
        out: list[Trigger] = []
        run: list[Any] = []
        by_name = self._by_name
        plain_names = self.plain_names
        heap = self._heap
        dirty = self._dirty
        if self.clock == -INF and self._pending == INF:
            self._start(now)  # the first instant: every rule is evaluated once
        for s in samples:
            ts = now if s.ts is None else s.ts
            if self._pending < ts or (heap and heap[0][0] < ts):
                if run:
                    out += plain(run, now)
                    run = []
                self.catch_up(ts, False, out)
            name = s.name
            if name in plain_names:
                run.append(s)
            leaves = by_name.get(name)
            if leaves is None:
                continue
            labels = s.labels
            alias = (*labels, *labels.values()) if labels else ()
            if s.stale:  # a staleness marker: the series ended at ts (Prometheus' stale NaN)
                self._end(leaves, alias, ts)
                continue
            value = s.value
            at = ts
            if ts < self.clock:  # a later instant was evaluated (a slower sampler's sample):
                at = self.clock  # it counts from now on, with its own ts for staleness
                self.late += 1
            for leaf in leaves:
                if leaf.sample(name, alias, labels, ts, value):
                    dirty.add(leaf.runtime)
                    if at < self._pending:
                        self._pending = at
        if run:
            out += plain(run, now)
        return out

    def end_series(self, name: str, labels: dict[str, str], ts: float) -> None:
        """A series ended at ``ts`` (a staleness marker): every operand reading it drops it."""
        alias = (*labels, *labels.values()) if labels else ()
        self._end(self._by_name.get(name, ()), alias, ts)

    def _end(self, leaves: Iterable[Leaf], alias: tuple[str, ...], ts: float) -> None:
        for leaf in leaves:
            if leaf.end(alias, ts):
                self._dirty.add(leaf.runtime)
                self._pending = min(self._pending, max(ts, self.clock))

    def _start(self, t: float) -> None:
        self._pending = t
        self._dirty.update(self.runtimes.values())

    def catch_up(self, limit: float, inclusive: bool, out: list[Trigger]) -> None:
        """Every instant before ``limit`` (and at it, if ``inclusive``) at which an expression
        changes, in time order with the machine's deadlines (those at ``t`` come after ``t``'s
        evaluation, as after a sample)."""
        if self.clock == -INF and self._pending == INF and inclusive:
            self._start(limit)
        heap = self._heap
        while True:
            t = self.next_event()
            if t > limit or (t == limit and not inclusive):
                return
            self._machine.run_due(t, False, out)
            while heap and heap[0][0] == t:
                _, _, leaf, series = heapq.heappop(heap)
                if leaf.woken(series, t):
                    self._dirty.add(leaf.runtime)
            self._pending = INF
            self._evaluate(t, out)

    def _evaluate(self, t: float, out: list[Trigger]) -> None:
        self.clock = t
        observe = self._machine.observe
        for runtime in self._dirty:
            root = runtime.root
            values, outputs = root.value, runtime.outputs
            record = runtime.rule.record
            alerting = bool(runtime.checks)
            for key in root.evaluate(t):
                value = values.get(key)
                if value is not None and value - value != 0.0:  # (±Inf or NaN)
                    value = _finite(value)
                if value is None:
                    entry = outputs.get(key)
                    if entry is not None:
                        self._vanish(runtime, entry, t, out)
                    continue
                if record is not None:
                    self.recorded.append(MetricSample(name=record, value=value, ts=t,
                                                      labels=dict(root.labels[key])))
                if not alerting:
                    continue
                entry = outputs.get(key) or runtime.entry(key, root.labels[key])
                runtime.unconfirmed.pop(key, None)
                entry.last_ts = t
                entry.value = value
                for st in entry.states:
                    # inactive and staying so: nothing to schedule (an output has no
                    # staleness deadline, see RuleRuntime.adopt), as observe would decide
                    if st.phase == INACTIVE and not st.check.test(value):
                        st.value = value
                    else:
                        observe(st, t, value, out)
            if runtime.unconfirmed:
                self._unconfirmed(runtime, t, out)
        self._dirty.clear()

    def _unconfirmed(self, runtime: RuleRuntime, t: float, out: list[Trigger]) -> None:
        """Restored outputs the expression has not given again by their due time vanish."""
        for key, due in list(runtime.unconfirmed.items()):
            if key in runtime.root.value:
                del runtime.unconfirmed[key]
            elif due <= t:
                del runtime.unconfirmed[key]
                entry = runtime.outputs.get(key)
                if entry is not None:
                    self._vanish(runtime, entry, t, out)

    def _vanish(self, runtime: RuleRuntime, entry: Entry, t: float, out: list[Trigger]) -> None:
        """An output series is gone at ``t``: it is stale now (``missing.then`` decides)."""
        for st in entry.states:
            self._machine.stale(st, t, out)  # missing.then decides (keep: the value holds)
        if all(st.phase == INACTIVE for st in entry.states):
            self._forget(entry)
            del runtime.outputs[entry.alias]

    # ------------------------------------------------------------ status

    def output_count(self) -> int:
        return sum(len(runtime.outputs) for runtime in self.runtimes.values())

    def entries(self) -> Iterator[Entry]:
        for runtime in self.runtimes.values():
            yield from runtime.outputs.values()

    def restore(self, saved: SavedState, key: str, check: Check) -> None:
        """A checkpointed state of an expr rule's output series, back in place."""
        runtime = self.runtimes.get(check.rule.name)
        if runtime is None:
            return
        entry = runtime.entry(key_of(saved.labels), saved.labels)
        st = next((s for s in entry.states if s.check is check), None)
        if st is None:
            return
        saved.restore(st, key)
        self._machine.schedule(st)
        due = saved.last_ts + runtime.rule.missing.after  # its inputs' staleness at the latest
        runtime.unconfirmed[entry.alias] = due
        heapq.heappush(self._heap, (due, next(self._seq), _Confirm(runtime), None))

    def take_recorded(self) -> list[MetricSample]:
        out, self.recorded = self.recorded, []
        return out


class _Confirm:
    """A heap entry that has a restored output's rule evaluated at its due time."""

    __slots__ = ("runtime",)

    def __init__(self, runtime: RuleRuntime) -> None:
        self.runtime = runtime

    def woken(self, s: object, t: float) -> bool:
        return True


def _finite(value: float) -> float | None:
    """What a trigger or a recorded sample can carry (both are finite on the wire).

    ±Inf (x/0) becomes the largest float of its sign, which every finite
    threshold compares the same way; NaN (0/0) is no result, which no threshold
    but ``!=`` would have passed either.
    """
    if math.isnan(value):
        return None
    return math.copysign(sys.float_info.max, value)
