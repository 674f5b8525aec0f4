"""The evaluator: per (rule, series) state machines in event time. Pure: no I/O, no clock.

States: inactive -> pending -> firing -> (resolved) inactive. The clock is the
samples' ``ts``; deadlines (``for``, ``keep_firing_for``, ``missing.after``,
``repeat``) are kept in one heap and handed to the caller as
``next_deadline()``; ``advance(now)`` fires what is due. Every sample at T is
applied before any timer due at T; instants are compared exactly, because a
deadline is always computed the same way (``start + duration``) in both paths.

Hot path (see bench/evaluator.py): rules are indexed by metric name, each
series' matching rules are computed once and cached on its entry, states are
``__slots__`` objects, and a state has at most one live heap entry (a deadline
that moves later, like staleness, is re-pushed lazily when it pops).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from flarebus.engine.language import stack_figures
from flarebus.engine.language.matchers import matches_all
from flarebus.engine.language.rulefile import Rule, RuleSet, StackSpec
from flarebus.engine.language.templates import context, render
from flarebus.events import ActionRef, MetricSample, StackSample, Trigger, series_key

INF = math.inf
INACTIVE, PENDING, FIRING = 0, 1, 2
PHASES = ("inactive", "pending", "firing")
_THEN = {"resolve": 0, "keep": 1, "fire": 2}
# event kinds, in the order they win a tie at the same instant
STALE, FOR, KEEP, REPEAT = 0, 1, 2, 3

#: (stack spec, sample, seconds since this series' previous stack sample or None) -> figure.
StackMeasure = Callable[[StackSpec, StackSample, float | None], float | None]


class Check:
    """One threshold of a rule on a series: the base (stage 0) or an escalation stage."""

    __slots__ = ("actions", "after", "clear", "for_", "keep", "metric_name", "reduce_fn",
                 "reduce_over", "repeat", "rule", "severity", "stage", "test", "then",
                 "threshold")

    def __init__(self, rule: Rule, stage: int) -> None:
        self.rule = rule
        self.stage = stage
        if stage == 0:
            when, clear, for_ = rule.when, rule.clear, rule.for_
            severity, actions = rule.severity, rule.actions
        else:
            s = rule.escalate[stage - 1]
            when, clear, for_, severity, actions = s.when, s.clear, s.for_, s.severity, s.actions
        self.test = when.test
        self.clear = clear.test if clear is not None else None
        self.threshold = when.text
        self.for_ = for_
        self.keep = rule.keep_firing_for
        self.repeat = rule.repeat or 0.0
        self.after = rule.missing.after
        self.then = _THEN[rule.missing.then]
        self.severity = severity
        self.actions: list[ActionRef] = list(actions)
        self.reduce_fn = rule.reduce.fn if rule.reduce else None
        self.reduce_over = rule.reduce.over if rule.reduce else 0.0
        self.metric_name = rule.metric or (f"stacks.{rule.stack.source}" if rule.stack else "")

    @property
    def ident(self) -> tuple[str, int]:
        return self.rule.name, self.stage


class Entry:
    """A series: its identity, its newest sample time, and the states of the checks matching it."""

    __slots__ = ("alias", "key", "labels", "last_ts", "name", "states")
    # alias: the key the series arrived under, (name, *label names, *label values): one flat
    # tuple sharing the strings of the labels dict, cheap to build per sample and to keep.

    def __init__(self, alias: Any, name: str, labels: dict[str, str], key: str) -> None:
        self.alias = alias
        self.name = name
        self.labels = labels
        self.key = key
        self.last_ts = -INF
        self.states: list[State] = []


class State:
    """The state machine of one check on one series."""

    __slots__ = ("check", "clear_since", "dead", "entry", "fired_at", "phase", "repeats",
                 "sched", "since", "skey", "t0", "value", "window")

    def __init__(self, check: Check, entry: Entry) -> None:
        self.check = check
        self.entry = entry
        self.phase = INACTIVE
        self.t0 = 0.0  # start of the current run of samples for which `when` holds
        self.since = 0.0  # active_since of the current firing
        self.value = 0.0
        self.clear_since: float | None = None
        self.fired_at = 0.0
        self.repeats = 0
        self.sched = INF  # due time of this state's live heap entry
        self.dead = False
        self.skey: str | None = None
        self.window: deque[tuple[float, float]] | None = deque() if check.reduce_fn else None

    @property
    def key(self) -> str:
        """The state key (safe as a NATS KV key): ``<rule>.<hash>`` or ``<rule>.s<N>.<hash>``."""
        if self.skey is None:
            digest = hashlib.blake2b(self.entry.key.encode(), digest_size=12).hexdigest()
            c = self.check
            self.skey = f"{c.rule.name}.{digest}" if c.stage == 0 else \
                f"{c.rule.name}.s{c.stage}.{digest}"
        return self.skey


class SavedState(msgspec.Struct, kw_only=True):
    """What survives a restart: enough to resume a pending or firing series exactly."""

    rule: str
    fingerprint: str
    stage: int
    name: str
    labels: dict[str, str]
    phase: int
    t0: float
    since: float
    value: float
    last_ts: float
    clear_since: float | None = None
    fired_at: float = 0.0
    repeats: int = 0


class EvaluatorStats(msgspec.Struct):
    series: int
    pending: int
    firing: int
    rules: int
    samples_dropped_out_of_order: int


class SeriesStatus(msgspec.Struct):
    rule: str
    series_key: str
    labels: dict[str, str]
    state: str
    since: float
    value: float
    stage: int = 0


_saved_encoder = msgspec.json.Encoder()
_saved_decoder = msgspec.json.Decoder(SavedState)


def trigger_id(rule: str, stage: int, series: str, active_since: float, state: str,
               repeat: int) -> str:
    """Deterministic: the same input always yields the same id (the JetStream Nats-Msg-Id)."""
    text = f"{rule}\x1f{stage}\x1f{series}\x1f{active_since!r}\x1f{state}\x1f{repeat}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def reduce_window(fn: str, window: deque[tuple[float, float]]) -> float | None:
    """The aggregate of the window's values (None: not defined yet, e.g. rate of one sample)."""
    if fn == "avg":
        return sum(v for _, v in window) / len(window)
    if fn == "min":
        return min(v for _, v in window)
    if fn == "max":
        return max(v for _, v in window)
    if fn == "sum":
        return sum(v for _, v in window)
    if fn == "count":
        return float(len(window))
    if fn == "rate":  # per second, counter resets count the new value as increase (as Prometheus)
        if len(window) < 2:
            return None
        increase, prev = 0.0, window[0][1]
        for _, v in window:
            increase += v - prev if v >= prev else v
            prev = v
        span = window[-1][0] - window[0][0]
        return increase / span if span > 0 else None
    q = {"p50": 0.5, "p90": 0.9, "p99": 0.99}[fn]  # Prometheus' quantile: linear interpolation
    values = sorted(v for _, v in window)
    rank = q * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


class Evaluator:
    """Evaluates a RuleSet over samples in event time; see the module docstring."""

    def __init__(self, rules: RuleSet, *, owns: Callable[[str], bool] | None = None,
                 stack_measure: StackMeasure | None = None) -> None:
        self._owns = owns
        self._stack_measure = stack_measure or stack_figures.stack_measure
        self._heap: list[tuple[float, int, State]] = []
        self._seq = 0
        self._series: dict[str, Entry] = {}  # canonical series key -> entry
        self._aliases: dict[Any, Entry] = {}  # (name, *label items) as received -> entry
        self._skip: set[Any] = set()  # received keys that match nothing here
        self._dirty: set[State] = set()
        self._deleted: set[str] = set()
        self._dropped = 0
        self._install(rules)

    # ------------------------------------------------------------------ rules

    def _install(self, rules: RuleSet) -> None:
        self.rules = rules
        self._checks: dict[tuple[str, int], Check] = {}
        self._by_metric: dict[str, list[Check]] = {}
        self._by_source: dict[str, list[Check]] = {}
        for rule in rules.enabled():
            for stage in range(len(rule.escalate) + 1):
                check = Check(rule, stage)
                self._checks[check.ident] = check
                if rule.metric is not None:
                    self._by_metric.setdefault(rule.metric, []).append(check)
                elif rule.stack is not None:
                    self._by_source.setdefault(rule.stack.source, []).append(check)

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
                if len(self._skip) > 200_000:  # bounded: a label that churns must not leak
                    self._skip.clear()
                self._skip.add(alias)
                return None
            entry = Entry(alias, name, labels, key)  # the sample's dict, not a copy
            entry.states = [State(c, entry) for c in matching]
            self._series[key] = entry
        self._aliases[alias] = entry
        return entry

    # ------------------------------------------------------------------ input

    def ingest(self, samples: Iterable[MetricSample], *, now: float) -> list[Trigger]:
        """Apply samples in order (ts None: now); timers due strictly before a sample go first."""
        out: list[Trigger] = []
        heap = self._heap
        by_metric = self._by_metric
        aliases = self._aliases
        skip = self._skip
        observe = self._observe
        for s in samples:
            ts = s.ts
            if ts is None:
                ts = now
            if heap and heap[0][0] < ts:
                self._run_timers(ts, False, out)
            name = s.name
            labels = s.labels
            alias = (name, *labels, *labels.values()) if labels else name
            entry = aliases.get(alias)  # a known series: one lookup
            if entry is None:
                checks = by_metric.get(name)
                if checks is None or alias in skip:
                    continue
                entry = self._new_entry(alias, name, labels, checks)
                if entry is None:
                    continue
            if ts < entry.last_ts:
                self._dropped += 1
                continue
            entry.last_ts = ts
            value = s.value
            for st in entry.states:
                # the common case inline: inactive, staying inactive, timer set, no window
                if st.phase == INACTIVE and st.window is None and st.sched != INF \
                        and not st.check.test(value):
                    st.value = value
                else:
                    observe(st, ts, value, out)
        if len(out) > 1:
            out.sort(key=_at)
        return out

    def ingest_stacks(self, samples: Iterable[StackSample], *, now: float) -> list[Trigger]:
        """Stack rules: each rule's figure of a stack sample runs through the same states."""
        out: list[Trigger] = []
        for s in samples:
            ts = now if s.ts is None else s.ts
            if self._heap and self._heap[0][0] < ts:
                self._run_timers(ts, False, out)
            checks = self._by_source.get(s.source)
            if not checks:
                continue
            name = f"stacks.{s.source}"
            alias = (name, *s.labels, *s.labels.values()) if s.labels else name
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
                    self._observe(st, ts, figure, out)
                elif st.sched == INF:
                    self._schedule(st)
        if len(out) > 1:
            out.sort(key=_at)
        return out

    def _observe(self, st: State, ts: float, value: float, out: list[Trigger]) -> None:
        """One sample (or figure) for one state: the transitions of the design's semantics."""
        c = st.check
        if c.reduce_fn is not None:
            window = st.window
            assert window is not None
            window.append((ts, value))
            cutoff = ts - c.reduce_over
            while window[0][0] <= cutoff:
                window.popleft()
            reduced = reduce_window(c.reduce_fn, window)
            if reduced is None:
                if st.sched == INF:
                    self._schedule(st)
                return
            value = reduced
        st.value = value
        phase = st.phase
        if phase == INACTIVE:
            if c.test(value):
                st.t0 = ts
                if ts >= ts + c.for_:
                    self._fire(st, ts, out)
                else:
                    st.phase = PENDING
                    self._dirty.add(st)
                    self._schedule(st)
            elif st.sched == INF:
                self._schedule(st)
        elif phase == PENDING:
            if c.test(value):
                if ts >= st.t0 + c.for_:
                    self._fire(st, ts, out)
                else:
                    self._dirty.add(st)
            else:
                st.phase = INACTIVE
                self._dirty.add(st)
                self._schedule(st)
        else:
            cleared = c.clear(value) if c.clear is not None else not c.test(value)
            if cleared:
                if st.clear_since is None:
                    st.clear_since = ts
                if ts >= st.clear_since + c.keep:
                    self._resolve(st, ts, out)
                    return
                self._schedule(st)
            else:
                st.clear_since = None
            self._dirty.add(st)

    # ------------------------------------------------------------ transitions

    def _fire(self, st: State, at: float, out: list[Trigger]) -> None:
        st.phase = FIRING
        st.since = st.t0
        st.fired_at = at
        st.repeats = 0
        st.clear_since = None
        out.append(self._trigger(st, "firing", at))
        self._dirty.add(st)
        self._schedule(st)

    def _resolve(self, st: State, at: float, out: list[Trigger]) -> None:
        out.append(self._trigger(st, "resolved", at))
        st.phase = INACTIVE
        st.clear_since = None
        self._dirty.add(st)
        self._schedule(st)

    def _trigger(self, st: State, state: str, at: float) -> Trigger:
        c = st.check
        rule = c.rule
        entry = st.entry
        labels = {**entry.labels, **rule.add_labels} if rule.add_labels else dict(entry.labels)
        duration = max(0.0, at - st.since)
        repeat = st.repeats if state == "firing" else 0
        annotations = {}
        if rule.annotations:
            fields = context(value=st.value, threshold=c.threshold, duration=duration,
                             labels=labels, rule=rule.name, severity=c.severity,
                             metric_name=c.metric_name, state=state, active_since=st.since, at=at)
            annotations = {k: render(t, fields) for k, t in rule.annotations.items()}
        return Trigger(
            id=trigger_id(rule.name, c.stage, entry.key, st.since, state, repeat),
            rule=rule.name, state=state, severity=c.severity,  # type: ignore[arg-type]
            metric_name=c.metric_name, value=st.value, threshold=c.threshold,
            duration=duration, labels=labels, annotations=annotations,
            active_since=st.since, at=at, actions=list(c.actions))

    # ----------------------------------------------------------------- timers

    def _next_event(self, st: State) -> tuple[float, int]:
        """(due, kind) of this state's earliest deadline; (INF, -1) when it has none."""
        c = st.check
        phase = st.phase
        best, kind = INF, -1
        if phase == INACTIVE or c.then == 0 or (c.then == 2 and phase == PENDING):
            best, kind = st.entry.last_ts + c.after, STALE
        if phase == PENDING:
            due = st.t0 + c.for_
            if due < best:
                best, kind = due, FOR
        elif phase == FIRING:
            if st.clear_since is not None:
                due = st.clear_since + c.keep
                if due < best:
                    best, kind = due, KEEP
            if c.repeat:
                due = st.fired_at + (st.repeats + 1) * c.repeat
                if due < best:
                    best, kind = due, REPEAT
        return best, kind

    def _schedule(self, st: State) -> None:
        """Make sure the heap holds an entry no later than this state's earliest deadline."""
        due = self._next_event(st)[0]
        if due < st.sched:
            st.sched = due
            self._seq += 1
            heapq.heappush(self._heap, (due, self._seq, st))

    def _requeue(self, st: State, when: float) -> None:
        """Move the heap's top entry (``st``'s live one) to ``when``, its later deadline.

        One sift instead of a pop and a push; the same result as popping and ``_schedule``.
        """
        if when == INF:
            heapq.heappop(self._heap)
            st.sched = INF
        else:
            st.sched = when
            self._seq += 1
            heapq.heapreplace(self._heap, (when, self._seq, st))

    def _run_timers(self, limit: float, inclusive: bool, out: list[Trigger]) -> None:
        heap = self._heap
        while heap:
            due = heap[0][0]
            if due > limit or (due == limit and not inclusive):
                return
            st = heap[0][2]
            if st.sched != due or st.dead:
                heapq.heappop(heap)
                continue  # superseded by an earlier push
            when, kind = self._next_event(st)
            if when > due:  # the deadline moved later (new samples): look again then
                self._requeue(st, when)
                continue
            heapq.heappop(heap)
            st.sched = INF
            self._on_event(st, when, kind, out)

    def _on_event(self, st: State, when: float, kind: int, out: list[Trigger]) -> None:
        if kind == FOR:
            self._fire(st, when, out)
        elif kind == KEEP:
            self._resolve(st, when, out)
        elif kind == REPEAT:
            st.repeats += 1
            out.append(self._trigger(st, "firing", when))
            self._dirty.add(st)
            self._schedule(st)
        elif kind == STALE:
            self._stale(st, when, out)

    def _stale(self, st: State, when: float, out: list[Trigger]) -> None:
        """No sample for missing.after: resolve (and forget), keep, or fire."""
        c = st.check
        if c.then == 2:
            if st.phase == INACTIVE:
                st.t0 = when
            self._fire(st, when, out)
            return
        if st.phase == FIRING:
            self._resolve(st, when, out)
            st.sched = INF  # _resolve scheduled a staleness check that is already due
        elif st.phase == PENDING:
            st.phase = INACTIVE
            self._dirty.add(st)
        if st.window is not None:
            st.window.clear()
        entry = st.entry
        if all(s.phase == INACTIVE and s.sched == INF for s in entry.states):
            self._forget(entry)

    def _forget(self, entry: Entry) -> None:
        for s in entry.states:
            s.dead = True
            if s.skey is not None:
                self._deleted.add(s.skey)
            self._dirty.discard(s)
        self._series.pop(entry.key, None)
        if self._aliases.get(entry.alias) is entry:
            del self._aliases[entry.alias]
        if len(self._aliases) > len(self._series):  # the series came with other label orders
            self._aliases = {a: e for a, e in self._aliases.items() if not e.states[0].dead}

    def advance(self, now: float) -> list[Trigger]:
        """Fire every deadline due at or before ``now``."""
        out: list[Trigger] = []
        self._run_timers(now, True, out)
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
        heap = self._heap
        while heap:
            due, _, st = heap[0]
            if due >= before:
                return None
            if st.sched != due or st.dead:
                heapq.heappop(heap)
                continue
            when = self._next_event(st)[0]
            if when > due:
                self._requeue(st, when)
                continue
            return due
        return None

    # ------------------------------------------------------------ hot reload

    def replace_rules(self, rules: RuleSet, *, now: float) -> list[Trigger]:
        """Unchanged rules keep state; changed/removed ones resolve what fired and start over."""
        out: list[Trigger] = []
        self._install(rules)
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
                    out.append(self._trigger(st, "resolved", now))
                st.dead = True
                if st.skey is not None:
                    self._deleted.add(st.skey)
                self._dirty.discard(st)
            matching = self._matching(self._candidates(entry.name), entry.labels)
            entry.states = [kept.get(c.ident) or State(c, entry) for c in matching]
            if not entry.states:
                del self._series[key]
            else:
                self._aliases[entry.alias] = entry
        self._heap.clear()
        for entry in self._series.values():
            for st in entry.states:
                st.sched = INF
                self._schedule(st)
        return out

    # ------------------------------------------------------------ persistence

    def dirty(self) -> set[str]:
        return {st.key for st in self._dirty} | set(self._deleted)

    def take_dirty(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = dict.fromkeys(self._deleted)
        for st in self._dirty:
            out[st.key] = None if st.phase == INACTIVE else _saved_encoder.encode(self._save(st))
        self._dirty.clear()
        self._deleted.clear()
        return out

    def _save(self, st: State) -> SavedState:
        c = st.check
        return SavedState(rule=c.rule.name, fingerprint=c.rule.fingerprint, stage=c.stage,
                          name=st.entry.name, labels=st.entry.labels, phase=st.phase, t0=st.t0,
                          since=st.since, value=st.value, last_ts=st.entry.last_ts,
                          clear_since=st.clear_since, fired_at=st.fired_at, repeats=st.repeats)

    def load_state(self, entries: Mapping[str, bytes]) -> None:
        """Restore pending and firing series (unknown rules or changed fingerprints are ignored)."""
        for key, data in entries.items():
            try:
                saved = _saved_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            check = self._checks.get((saved.rule, saved.stage))
            if check is None or check.rule.fingerprint != saved.fingerprint:
                continue
            alias = (saved.name, *saved.labels, *saved.labels.values()) if saved.labels \
                else saved.name
            entry = self._series.get(series_key(saved.name, saved.labels)) or self._new_entry(
                alias, saved.name, saved.labels, self._candidates(saved.name))
            if entry is None:
                continue
            st = next((s for s in entry.states if s.check is check), None)
            if st is None:
                continue
            entry.last_ts = max(entry.last_ts, saved.last_ts)
            st.phase, st.t0, st.since, st.value = saved.phase, saved.t0, saved.since, saved.value
            st.clear_since, st.fired_at, st.repeats = saved.clear_since, saved.fired_at, \
                saved.repeats
            st.skey = key
            st.sched = INF
            self._schedule(st)

    # ---------------------------------------------------------------- status

    def stats(self) -> EvaluatorStats:
        pending = firing = 0
        for entry in self._series.values():
            for st in entry.states:
                if st.phase == PENDING:
                    pending += 1
                elif st.phase == FIRING:
                    firing += 1
        return EvaluatorStats(series=len(self._series), pending=pending, firing=firing,
                              rules=len(self.rules.enabled()),
                              samples_dropped_out_of_order=self._dropped)

    def firing(self, rule: str, stage: int = 0) -> list[Trigger]:
        """The series of ``rule`` firing now, each as its (first) firing trigger."""
        return [self._trigger(st, "firing", st.fired_at) for entry in self._series.values()
                for st in entry.states
                if st.phase == FIRING and st.check.rule.name == rule and st.check.stage == stage]

    def states(self) -> Iterator[SeriesStatus]:
        """Every tracked (rule, series): firing first, then pending, then inactive."""
        for phase in (FIRING, PENDING, INACTIVE):
            for entry in self._series.values():
                for st in entry.states:
                    if st.phase == phase:
                        since = st.since if phase == FIRING else (
                            st.t0 if phase == PENDING else entry.last_ts)
                        yield SeriesStatus(rule=st.check.rule.name, series_key=entry.key,
                                           labels=entry.labels, state=PHASES[phase],
                                           since=since, value=st.value, stage=st.check.stage)


def _at(trigger: Trigger) -> float:
    return trigger.at
