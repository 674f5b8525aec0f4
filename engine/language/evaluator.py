"""The evaluator: per (rule, series) state machines in event time. Pure: no I/O, no clock.

The clock is the samples' ``ts``; deadlines (``for``, ``keep_firing_for``,
``missing.after``, ``repeat``) are handed to the caller as
``next_deadline()``; ``advance(now)`` fires what is due. Every sample at T is
applied before any deadline due at T.

This module dispatches: it finds the states a sample reaches (the rule index
and the series index), runs the deadlines due before each sample, and owns
reloads, checkpoints and status. The transitions and the deadline heap are in
machine.py, the tracked objects in series.py, window reducers in reducers.py,
stack figures in stack_figures.py.

Hot path (see bench/evaluator.py): rules are indexed by metric name, each
series' matching rules are computed once and cached on its entry, and the
commonest case (an inactive state staying inactive) is decided inline
without a call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from operator import attrgetter
from typing import Any

import msgspec

from flarebus.engine.language import stack_figures
from flarebus.engine.language.cardinality import SeriesGuard
from flarebus.engine.language.expr.runtime import ExprEvaluator
from flarebus.engine.language.machine import Machine
from flarebus.engine.language.matchers import matches_all
from flarebus.engine.language.rulefile import Rule, RuleSet
from flarebus.engine.language.series import (
    FIRING,
    INACTIVE,
    INF,
    Check,
    Entry,
    State,
    alias_of,
    saved_decoder,
)
from flarebus.engine.language.stack_figures import StackMeasure
from flarebus.engine.language.status import EvaluatorStats, SeriesStatus, count_states, list_states
from flarebus.events import MetricSample, StackSample, Trigger, WireSample, series_key

#: Received keys remembered as matching nothing; bounded, so a churning label cannot leak.
MAX_SKIPPED = 200_000


class Evaluator:
    """Evaluates a RuleSet over samples in event time; see the module docstring."""

    def __init__(self, rules: RuleSet, *, owns: Callable[[str], bool] | None = None,
                 stack_measure: StackMeasure = stack_figures.stack_measure,
                 guard: SeriesGuard | None = None) -> None:
        self._owns = owns
        self.guard = guard  # bounds on tracked series (engine.limits); None: unbounded
        self._stack_measure = stack_measure
        self._machine = Machine(self._forget)
        self._series: dict[str, Entry] = {}  # canonical series key -> entry
        self._aliases: dict[Any, Entry] = {}  # (name, *label items) as received -> entry
        self._skip: set[Any] = set()  # received keys that match nothing here
        self._dropped = 0
        self._expr: ExprEvaluator | None = None  # the expr rules (expr/runtime.py), if any
        self._install(rules, None)

    # ------------------------------------------------------------------ rules

    def _install(self, rules: RuleSet, now: float | None) -> None:
        self.rules = rules
        self._checks: dict[tuple[str, int], Check] = {}
        self._by_metric: dict[str, list[Check]] = {}
        self._by_source: dict[str, list[Check]] = {}
        exprs: list[tuple[Rule, list[Check]]] = []
        for rule in rules.enabled():
            stages = len(rule.escalate) + 1 if rule.when is not None else 0  # 0: recording
            checks = [Check(rule, stage) for stage in range(stages)]
            for check in checks:
                self._checks[check.ident] = check
                if rule.metric is not None:
                    self._by_metric.setdefault(rule.metric, []).append(check)
                elif rule.stack is not None:
                    self._by_source.setdefault(rule.stack.source, []).append(check)
            if rule.expr is not None:
                exprs.append((rule, checks))
        if exprs and self._expr is None:
            self._expr = ExprEvaluator(self._machine, self._forget, self._owns)
        if self._expr is not None:
            self._expr.plain_names = set(self._by_metric)
            self._expr.install(exprs, now)

    def _entries(self) -> Iterable[Entry]:
        """Every tracked series: the plain rules' and the expr rules' output series."""
        if self._expr is None:
            return self._series.values()
        return itertools.chain(self._series.values(), self._expr.entries())

    def _matching(self, checks: list[Check], labels: Mapping[str, str]) -> list[Check]:
        return [c for c in checks if matches_all(c.rule.matchers, labels)]

    def _candidates(self, name: str) -> list[Check]:
        if name.startswith("stacks.") and name[7:] in self._by_source:
            return self._by_source[name[7:]]
        return self._by_metric.get(name, [])

    def _new_entry(self, alias: Any, name: str, labels: dict[str, str],
                   checks: list[Check]) -> Entry | None:
        key = series_key(name, labels)
        entry = self._series.get(key)
        if entry is None:
            matching = self._matching(checks, labels)
            if not matching or (self._owns is not None and not self._owns(key)):
                if len(self._skip) > MAX_SKIPPED:
                    self._skip.clear()
                self._skip.add(alias)
                return None
            guard = self.guard
            if guard is not None and not (matching := guard.admit(matching)):
                return None  # refused and counted; not skipped: admitted once there is room
            entry = Entry(alias, name, labels, key)  # the sample's dict, not a copy
            entry.set_states([State(c, entry) for c in matching])
            self._series[key] = entry
            if guard is not None:
                guard.track(entry)
        self._aliases[alias] = entry
        return entry

    def _forget(self, entry: Entry) -> None:
        """A series gone stale with nothing left to time: drop it and its stored states."""
        for s in entry.states:
            self._machine.retire(s)
        if self._series.get(entry.key) is entry:  # (an expr rule's output is not in _series)
            del self._series[entry.key]
            if self.guard is not None:
                self.guard.forget(entry)
        if self._aliases.get(entry.alias) is entry:
            del self._aliases[entry.alias]
        if len(self._aliases) > len(self._series):  # the series came with other label orders
            self._aliases = {a: e for a, e in self._aliases.items() if not e.states[0].dead}

    # ------------------------------------------------------------------ input

    def ingest(self, samples: Iterable[MetricSample | WireSample], *,
               now: float) -> list[Trigger]:
        """Apply samples in order (ts None: now); timers due strictly before a sample go first.
        Expr rules (expr/runtime.py) see the samples first and hand the plain path its runs.
        A staleness marker (``stale``) ends its series at its ``ts``, as ``missing.after``
        running out would (``Machine.stale``); for a series not tracked it does nothing."""
        if self._expr is None:
            return self._ingest(samples, now)
        out = self._expr.ingest(samples, now, self._ingest)
        if len(out) > 1:
            out.sort(key=_at)
        return out

    def _ingest(self, samples: Iterable[MetricSample | WireSample], now: float) -> list[Trigger]:
        """The plain rules' sample path (the hot loop)."""
        out: list[Trigger] = []
        machine = self._machine
        heap = machine.heap
        by_metric = self._by_metric
        aliases = self._aliases
        skip = self._skip
        observe = machine.observe
        for s in samples:
            ts = s.ts
            if ts is None:
                ts = now
            if heap and heap[0][0] < ts:
                machine.run_due(ts, False, out)
            name = s.name
            labels = s.labels
            alias = (name, *labels, *labels.values()) if labels else name  # alias_of, inline
            entry = aliases.get(alias)  # a known series: one lookup
            if entry is None:
                checks = by_metric.get(name)
                if checks is None or alias in skip:
                    continue
                # a marker starts nothing, but may name a known series in another label order
                entry = self._series.get(series_key(name, labels)) if s.stale else \
                    self._new_entry(alias, name, labels, checks)
                if entry is None:
                    continue
            if ts < entry.last_ts:
                self._dropped += 1
                continue
            entry.last_ts = ts
            if s.stale:  # a staleness marker: the series ended at ts
                machine.series_stale(entry, ts, out)
                continue
            value = s.value
            if entry.calm and entry.lo <= value <= entry.hi:  # the commonest case: one test
                entry.value = value  # every state's value while calm (see Entry)
                continue
            calm = True
            for st in entry.states:
                # the common case inline: inactive, staying inactive, timer set, no window
                if st.phase == INACTIVE and st.window is None and st.sched != INF \
                        and not st.check.test(value):
                    st.value = value
                else:
                    observe(st, ts, value, out)
                    if st.phase != INACTIVE or st.sched == INF or st.window is not None:
                        calm = False
            entry.calm = calm  # every state's value is `value` now: Entry.value while calm
            entry.value = value
        if len(out) > 1:
            out.sort(key=_at)
        return out

    def ingest_stacks(self, samples: Iterable[StackSample], *, now: float) -> list[Trigger]:
        """Stack rules: each rule's figure of a stack sample runs through the same states."""
        out: list[Trigger] = []
        machine = self._machine
        for s in samples:
            ts = now if s.ts is None else s.ts
            if self._expr is not None:  # expression instants before ts come first
                self._expr.catch_up(ts, False, out)
            if machine.heap and machine.heap[0][0] < ts:
                machine.run_due(ts, False, out)
            checks = self._by_source.get(s.source)
            if not checks:
                continue
            name = f"stacks.{s.source}"
            alias = alias_of(name, s.labels)
            entry = self._aliases.get(alias)
            if entry is None:
                if alias in self._skip:
                    continue
                entry = self._new_entry(alias, name, s.labels, checks)
                if entry is None:
                    continue
            if ts < entry.last_ts:
                self._dropped += 1
                continue
            interval = None if entry.last_ts == -INF else ts - entry.last_ts
            entry.last_ts = ts
            for st in entry.states:
                rule = st.check.rule
                assert rule.stack is not None
                figure = self._stack_measure(rule.stack, s, interval)
                if figure is not None:
                    machine.observe(st, ts, figure, out)
                elif st.sched == INF:
                    machine.schedule(st)
        if len(out) > 1:
            out.sort(key=_at)
        return out

    # ----------------------------------------------------------------- timers

    def advance(self, now: float) -> list[Trigger]:
        """Fire every deadline due at or before ``now``."""
        out: list[Trigger] = []
        if self._expr is not None:
            self._expr.catch_up(now, True, out)
        self._machine.run_due(now, True, out)
        if len(out) > 1:
            out.sort(key=_at)
        return out

    def next_deadline(self, before: float = INF) -> float | None:
        """The earliest pending deadline (event time) if it is earlier than ``before``, else None.

        ``before`` is for a caller that already has a wake-up set (the engine's timer): only
        a deadline earlier than that one is news. The heap's top is a lower bound of every
        deadline, so when it is not earlier the answer costs O(1); without ``before`` the
        answer is exact, which means re-queueing every top entry whose deadline moved later
        (staleness moves with each sample), so asking that after every batch costs a heap
        operation per recently sampled state.
        """
        due = self._machine.next_deadline(before)
        if self._expr is not None:
            expr = self._expr.next_event()  # an instant to evaluate, or an operand's wake-up
            if expr < before and (due is None or expr < due):
                return expr
        return due

    def take_recorded(self) -> list[MetricSample]:
        """The samples recording rules computed since the last call (to publish)."""
        return self._expr.take_recorded() if self._expr is not None else []

    # ------------------------------------------------------------ hot reload

    def replace_rules(self, rules: RuleSet, *, now: float) -> list[Trigger]:
        """Unchanged rules keep state; changed/removed ones resolve what fired and start over."""
        out: list[Trigger] = []
        machine = self._machine
        old_exprs = dict(self._expr.runtimes) if self._expr is not None else {}
        self._install(rules, now)
        if self._expr is not None:
            self._expr.retired(old_exprs, now, out)
        self._aliases.clear()
        self._skip.clear()
        for key, entry in list(self._series.items()):
            kept: dict[tuple[str, int], State] = {}
            for st in entry.states:
                new = self._checks.get(st.check.ident)
                if new is not None and new.rule.fingerprint == st.check.rule.fingerprint:
                    st.check = new
                    kept[new.ident] = st
                    continue
                if st.phase == FIRING:
                    out.append(machine.trigger(st, "resolved", now))
                machine.retire(st)
            matching = self._matching(self._candidates(entry.name), entry.labels)
            entry.set_states([kept.get(c.ident) or State(c, entry) for c in matching])
            if not entry.states:
                del self._series[key]
            else:
                self._aliases[entry.alias] = entry
        machine.reschedule_all([st for e in self._entries() for st in e.states])
        if self.guard is not None:
            self.guard.recount(self._series.values())
        return out

    # ------------------------------------------------------------ persistence

    def take_dirty(self) -> dict[str, bytes | None]:
        """State keys changed since the last call: saved state, or None to delete the key."""
        return self._machine.take_dirty()

    def load_state(self, entries: Mapping[str, bytes]) -> None:
        """Restore pending and firing series (unknown rules or changed fingerprints are ignored)."""
        for key, data in entries.items():
            try:
                saved = saved_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            check = self._checks.get((saved.rule, saved.stage))
            if check is None or check.rule.fingerprint != saved.fingerprint:
                continue
            if check.rule.expr is not None:
                if self._expr is not None:
                    self._expr.restore(saved, key, check)
                continue
            entry = self._series.get(series_key(saved.name, saved.labels)) or self._new_entry(
                alias_of(saved.name, saved.labels), saved.name, saved.labels,
                self._candidates(saved.name))
            if entry is None:
                continue
            st = next((s for s in entry.states if s.check is check), None)
            if st is None:
                continue
            saved.restore(st, key)
            self._machine.schedule(st)

    def set_owner(self, owns: Callable[[str], bool] | None) -> None:
        """Own a different part of the series (coordinated engines gain partitions).

        The keys once skipped as not owned are forgotten: they may be owned now.
        """
        self._owns = owns
        self._skip.clear()

    def release(self, gone: Callable[[str], bool]) -> int:
        """Forget the series whose key ``gone`` selects, keeping their stored state.

        A partition handed to another engine: that engine restores these states
        from the checkpoint, so nothing here may delete them (unlike staleness).
        """
        keys = [key for key in self._series if gone(key)]
        for key in keys:
            for st in self._series.pop(key).states:
                st.dead = True
                self._machine.dirty.discard(st)
        if keys:
            self._aliases = {a: e for a, e in self._aliases.items() if e.key in self._series}
        return len(keys)

    # ---------------------------------------------------------------- status

    @property
    def dropped_out_of_order(self) -> int:
        """Samples older than their series' last one, dropped (no pass over the states)."""
        return self._dropped

    def series_count(self) -> int:
        """Series tracked, without the pass over every state that ``stats()`` makes."""
        return len(self._series) + (self._expr.output_count() if self._expr else 0)

    def stats(self) -> EvaluatorStats:
        return count_states(self._entries(), rules=len(self.rules.enabled()), dropped=self._dropped)

    def firing(self, rule: str, stage: int = 0) -> list[Trigger]:
        """The series of ``rule`` firing now, each as its (first) firing trigger."""
        return [self._machine.trigger(st, "firing", st.fired_at)
                for entry in self._entries() for st in entry.states
                if st.phase == FIRING and st.check.rule.name == rule and st.check.stage == stage]

    def states(self, *, active: bool = False) -> Iterator[SeriesStatus]:
        """Every tracked (rule, series): firing first, then pending, then inactive."""
        return list_states(self._entries, active=active)


_at: Callable[[Trigger], float] = attrgetter("at")  # the sort key of a run's triggers
