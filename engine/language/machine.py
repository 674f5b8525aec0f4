"""The series state machine: transitions on a sample or a deadline, one deadline heap.

The design's semantics, for one State at a time: a sample (``observe``) or
a due deadline (``run_due``) moves it between inactive, pending and firing,
emitting a Trigger for every firing, resolution and repeat. Which state a
sample reaches is the evaluator's job (evaluator.py); this module never looks
up a series.

Deadlines live in one heap of ``(due, seq, state)``. A state has at most one
live entry (``state.sched`` is its due time); a deadline that moves later,
like staleness with each sample, is not re-pushed but re-queued lazily when
its entry comes up, so a sample costs no heap operation. Instants are compared
exactly: every deadline is computed by ``next_due`` in both paths.

Every state whose checkpointed fields changed is in ``dirty``, every state
key that no longer exists in ``deleted``: the checkpointer writes only those.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable

from flarebus.engine.language.reducers import reduce_window
from flarebus.engine.language.series import (
    DUE_FOR,
    DUE_KEEP,
    DUE_REPEAT,
    DUE_STALE,
    FIRE,
    FIRING,
    INACTIVE,
    INF,
    KEEP,
    PENDING,
    Due,
    Entry,
    SavedState,
    State,
    next_due,
    saved_encoder,
)
from flarebus.engine.language.templates import context, render
from flarebus.events import Trigger


def trigger_id(rule: str, stage: int, series: str, active_since: float, state: str,
               repeat: int) -> str:
    """Deterministic: the same input always yields the same id (the JetStream Nats-Msg-Id)."""
    text = f"{rule}\x1f{stage}\x1f{series}\x1f{active_since!r}\x1f{state}\x1f{repeat}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Machine:
    """Transitions of states, their deadlines, and what changed since the last checkpoint."""

    def __init__(self, forget: Callable[[Entry], None]) -> None:
        self._forget = forget  # the evaluator drops a series gone stale from its index
        self.heap: list[tuple[float, int, State]] = []
        self._seq = 0
        self.dirty: set[State] = set()
        self.deleted: set[str] = set()

    # ------------------------------------------------------------------ samples

    def observe(self, st: State, ts: float, value: float, out: list[Trigger]) -> None:
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
                    self.schedule(st)
                return
            value = reduced
        st.value = value
        phase = st.phase
        if phase == INACTIVE:
            if c.test(value):
                st.t0 = ts
                if ts >= ts + c.for_:
                    self.fire(st, ts, out)
                else:
                    st.phase = PENDING
                    self.dirty.add(st)
                    self.schedule(st)
            elif st.sched == INF:
                self.schedule(st)
        elif phase == PENDING:
            if c.test(value):
                if ts >= st.t0 + c.for_:
                    self.fire(st, ts, out)
                else:
                    self.dirty.add(st)
            else:
                st.phase = INACTIVE
                self.dirty.add(st)
                self.schedule(st)
        else:
            cleared = c.clear(value) if c.clear is not None else not c.test(value)
            if cleared:
                if st.clear_since is None:
                    st.clear_since = ts
                if ts >= st.clear_since + c.keep:
                    self.resolve(st, ts, out)
                    return
                self.schedule(st)
            else:
                st.clear_since = None
            self.dirty.add(st)

    # -------------------------------------------------------------- transitions

    def fire(self, st: State, at: float, out: list[Trigger]) -> None:
        st.phase = FIRING
        st.since = st.t0
        st.fired_at = at
        st.repeats = 0
        st.clear_since = None
        out.append(self.trigger(st, "firing", at))
        self.dirty.add(st)
        self.schedule(st)

    def resolve(self, st: State, at: float, out: list[Trigger]) -> None:
        out.append(self.trigger(st, "resolved", at))
        st.phase = INACTIVE
        st.clear_since = None
        self.dirty.add(st)
        self.schedule(st)

    def trigger(self, st: State, state: str, at: float) -> Trigger:
        """The Trigger of ``st`` becoming (or repeating) ``state`` at ``at``."""
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
            active_since=st.since, at=at, actions=list(c.actions), group=rule.group)

    def retire(self, st: State) -> None:
        """``st`` is gone (its series forgotten, its rule changed): delete its stored key."""
        st.dead = True
        if st.skey is not None:
            self.deleted.add(st.skey)
        self.dirty.discard(st)

    # ---------------------------------------------------------------- deadlines

    def schedule(self, st: State) -> None:
        """Make sure the heap holds an entry no later than this state's earliest deadline."""
        due = next_due(st)[0]
        if due < st.sched:
            st.sched = due
            self._seq += 1
            heapq.heappush(self.heap, (due, self._seq, st))

    def reschedule_all(self, states: list[State]) -> None:
        """Rebuild the heap from scratch for ``states`` (after a rule reload)."""
        self.heap.clear()
        for st in states:
            st.sched = INF
            st.entry.wake()
            self.schedule(st)

    def _requeue(self, st: State, when: float) -> None:
        """Move the heap's top entry (``st``'s live one) to ``when``, its later deadline.

        One sift instead of a pop and a push; the same result as popping and ``schedule``.
        """
        if when == INF:
            heapq.heappop(self.heap)
            st.sched = INF
            st.entry.wake()
        else:
            st.sched = when
            self._seq += 1
            heapq.heapreplace(self.heap, (when, self._seq, st))

    def run_due(self, limit: float, inclusive: bool, out: list[Trigger]) -> None:
        """Apply every deadline before ``limit`` (and at it, when ``inclusive``), in order."""
        heap = self.heap
        while heap:
            due = heap[0][0]
            if due > limit or (due == limit and not inclusive):
                return
            st = heap[0][2]
            if st.sched != due or st.dead:
                heapq.heappop(heap)
                continue  # superseded by an earlier push
            when, kind = next_due(st)
            if when > due:  # the deadline moved later (new samples): look again then
                self._requeue(st, when)
                continue
            heapq.heappop(heap)
            st.sched = INF
            if st.entry.calm:  # see Entry: the timer path works on the states themselves
                st.entry.wake()
            self._on_due(st, when, kind, out)

    def next_deadline(self, before: float = INF) -> float | None:
        """The earliest deadline if it is earlier than ``before``, else None (see Evaluator)."""
        heap = self.heap
        while heap:
            due, _, st = heap[0]
            if due >= before:
                return None
            if st.sched != due or st.dead:
                heapq.heappop(heap)
                continue
            when = next_due(st)[0]
            if when > due:
                self._requeue(st, when)
                continue
            return due
        return None

    def _on_due(self, st: State, when: float, kind: Due | None, out: list[Trigger]) -> None:
        if kind == DUE_FOR:
            self.fire(st, when, out)
        elif kind == DUE_KEEP:
            self.resolve(st, when, out)
        elif kind == DUE_REPEAT:
            st.repeats += 1
            out.append(self.trigger(st, "firing", when))
            self.dirty.add(st)
            self.schedule(st)
        elif kind == DUE_STALE:
            self.stale(st, when, out)
            self._forget_if_done(st.entry)

    def stale(self, st: State, when: float, out: list[Trigger]) -> None:
        """``st``'s series became stale at ``when``: resolve, keep or fire, per ``missing.then``.

        The one place staleness is applied, whatever said so: no sample for
        ``missing.after`` (the timer) or a staleness marker on the wire
        (``series_stale``); the ``expr`` evaluator calls it for its output series.
        ``resolve``: a firing state resolves at ``when`` (without ``keep_firing_for``), a
        pending one is dropped; ``keep``: the last value holds, a pending or firing state
        carries on; ``fire``: fires (once) at ``when``. A state left inactive has nothing
        more to time until its next sample: its deadline is dropped and its window
        emptied, so the caller can forget the series (``_forget_if_done``).
        """
        c = st.check
        phase = st.phase
        if c.then == FIRE:
            if phase != FIRING:
                if phase == INACTIVE:
                    st.t0 = when
                self.fire(st, when, out)
            return
        if c.then == KEEP and phase != INACTIVE:
            return
        if phase == FIRING:
            self.resolve(st, when, out)
        elif phase == PENDING:
            st.phase = INACTIVE
            self.dirty.add(st)
        st.sched = INF  # any heap entry of it is void now (resolve's new one included)
        if st.window is not None:
            st.window.clear()

    def series_stale(self, entry: Entry, when: float, out: list[Trigger]) -> None:
        """A staleness marker: every state of ``entry`` goes stale at ``when`` (see ``stale``)."""
        entry.wake()
        for st in entry.states:
            self.stale(st, when, out)
        self._forget_if_done(entry)

    def _forget_if_done(self, entry: Entry) -> None:
        """Drop a series none of whose states is active or has a deadline left."""
        if all(s.phase == INACTIVE and s.sched == INF for s in entry.states):
            self._forget(entry)

    # ------------------------------------------------------------- persistence

    def take_dirty(self) -> dict[str, bytes | None]:
        """What changed since the last call: state key -> saved state, or None to delete."""
        out: dict[str, bytes | None] = dict.fromkeys(self.deleted)
        for st in self.dirty:
            out[st.key] = None if st.phase == INACTIVE else \
                saved_encoder.encode(SavedState.of(st))
        self.dirty.clear()
        self.deleted.clear()
        return out
