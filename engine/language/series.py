"""What the evaluator tracks: compiled checks, series, and one state per (check, series).

Kept apart from the transitions (machine.py) and the dispatch (evaluator.py)
because these are the objects there are hundreds of thousands of: each is a
``__slots__`` class holding only what the semantics need, and the deadline
of a state is a pure function of its fields (``next_due``), so the timer
path and the sample path can never compute the same instant differently.

The phases, the ``missing.then`` modes and the deadline kinds are named int
constants typed as ``Literal``s, not IntEnums: CPython specialises comparisons
of exact ints only, and with IntEnum members in the hot loop the evaluator ran
2.6% more instructions per sample (bench/evaluator.py under cachegrind: 9.91 G
against 9.66 G for a million samples). Checkpoints store the same ints
(``SavedState.phase``, validated against ``Phase`` when decoded).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from typing import Any, Final, Literal

import msgspec

from flarebus.engine.language.rulefile import Rule
from flarebus.events import ActionRef

INF: Final = math.inf


#: Where a state is: inactive -> pending -> firing -> (resolved) inactive.
Phase = Literal[0, 1, 2]
INACTIVE: Final = 0
PENDING: Final = 1
FIRING: Final = 2
PHASE_NAMES: Final = ("inactive", "pending", "firing")

#: ``missing.then``: what a series going stale does to a state.
Then = Literal[0, 1, 2]
RESOLVE: Final = 0
KEEP: Final = 1
FIRE: Final = 2
THEN: Final[dict[str, Then]] = {"resolve": RESOLVE, "keep": KEEP, "fire": FIRE}

#: What a deadline is for; of two due at one instant, the lower one wins.
Due = Literal[0, 1, 2, 3]
DUE_STALE: Final = 0
DUE_FOR: Final = 1
DUE_KEEP: Final = 2
DUE_REPEAT: Final = 3


#: An empty quiet range: no value is certainly quiet.
NEVER_QUIET: Final = (INF, -INF)


def quiet_range(op: str, t: float) -> tuple[float, float]:
    """``[lo, hi]``: values ``v`` (finite) for which ``v op t`` is certainly false.

    Strict bounds become the neighbouring float (``math.nextafter``), so the
    range is exact for floats and only ever too small (never too large) for
    anything else: a value outside it simply takes the full path.
    """
    if op == ">":
        return -INF, t
    if op == ">=":
        return -INF, math.nextafter(t, -INF)
    if op == "<":
        return t, INF
    if op == "<=":
        return math.nextafter(t, INF), INF
    if op == "!=":
        return t, t
    return NEVER_QUIET  # "==" is false on both sides of t: not one range


class Check:
    """One threshold of a rule on a series: the base (stage 0) or an escalation stage."""

    __slots__ = ("actions", "after", "clear", "for_", "keep", "metric_name", "quiet",
                 "reduce_fn", "reduce_over", "repeat", "rule", "severity", "stage", "test",
                 "then", "threshold")

    def __init__(self, rule: Rule, stage: int) -> None:
        self.rule = rule
        self.stage = stage
        if stage == 0:
            when, clear, for_ = rule.when, rule.clear, rule.for_
            severity, actions = rule.severity, rule.actions
        else:
            s = rule.escalate[stage - 1]
            when, clear, for_, severity, actions = s.when, s.clear, s.for_, s.severity, s.actions
        assert when is not None  # a recording rule (no when) has no checks
        self.test = when.test
        self.quiet = NEVER_QUIET if rule.reduce else quiet_range(when.op, when.value)
        self.clear = clear.test if clear is not None else None
        self.threshold = when.text
        self.for_ = for_
        self.keep = rule.keep_firing_for
        self.repeat = rule.repeat or 0.0
        self.after = rule.missing.after
        self.then = THEN[rule.missing.then]
        self.severity = severity
        self.actions: list[ActionRef] = list(actions)
        self.reduce_fn = rule.reduce.fn if rule.reduce else None
        self.reduce_over = rule.reduce.over if rule.reduce else 0.0
        self.metric_name = rule.metric or (f"stacks.{rule.stack.source}" if rule.stack else "")

    @property
    def ident(self) -> tuple[str, int]:
        return self.rule.name, self.stage


class Entry:
    """A series: its identity, its newest sample time, and the states of the checks matching it.

    ``calm`` says every state is inactive, windowless and has its deadline in the
    heap: then a sample in ``[lo, hi]`` (where every check's ``when`` is false)
    changes nothing but the states' ``value``, and the evaluator decides that
    with one test for the whole series instead of one per state, and keeps the
    value once, in ``value``: while calm, that is every state's value. Only the
    evaluator's sample path makes a series calm (after looking at every state);
    whatever else touches its states (a timer run, a restore, a reload) first
    calls ``wake``, which hands the value back to the states.
    """

    __slots__ = ("alias", "calm", "hi", "key", "labels", "last_ts", "lo", "name", "states",
                 "value")
    # alias: the key the series arrived under, (name, *label names, *label values): one flat
    # tuple sharing the strings of the labels dict, cheap to build per sample and to keep.

    def __init__(self, alias: Any, name: str, labels: dict[str, str], key: str) -> None:
        self.alias = alias
        self.name = name
        self.labels = labels
        self.key = key
        self.last_ts = -INF
        self.states: list[State] = []
        self.calm = False
        self.value = 0.0
        self.lo, self.hi = NEVER_QUIET

    def wake(self) -> None:
        """No longer calm: every state's ``value`` is the series' last one again."""
        if self.calm:
            self.calm = False
            value = self.value
            for st in self.states:
                st.value = value

    def set_states(self, states: list[State]) -> None:
        """The states of the checks matching this series; the quiet range is all of theirs."""
        self.wake()
        self.states = states
        lo, hi = NEVER_QUIET if not states else (-INF, INF)
        for st in states:  # the intersection (a plain loop: this runs for every new series)
            q_lo, q_hi = st.check.quiet
            if q_lo > lo:
                lo = q_lo
            if q_hi < hi:
                hi = q_hi
        self.lo, self.hi = lo, hi


def alias_of(name: str, labels: dict[str, str]) -> Any:
    """The key a series arrives under (see ``Entry.alias``): no canonical sorting needed."""
    return (name, *labels, *labels.values()) if labels else name


class State:
    """The state machine of one check on one series."""

    __slots__ = ("check", "clear_since", "dead", "entry", "fired_at", "phase", "repeats",
                 "sched", "since", "skey", "t0", "value", "window")

    def __init__(self, check: Check, entry: Entry) -> None:
        self.check = check
        self.entry = entry
        self.phase: Phase = INACTIVE
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


def next_due(st: State) -> tuple[float, Due | None]:
    """(due, kind) of this state's earliest deadline; (INF, None) when it has none."""
    c = st.check
    phase = st.phase
    best: float = INF
    kind: Due | None = None
    then = c.then
    if phase == INACTIVE or then == RESOLVE or (then == FIRE and phase == PENDING):
        best, kind = st.entry.last_ts + c.after, DUE_STALE
    if phase == PENDING:
        due = st.t0 + c.for_
        if due < best:
            best, kind = due, DUE_FOR
    elif phase == FIRING:
        if st.clear_since is not None:
            due = st.clear_since + c.keep
            if due < best:
                best, kind = due, DUE_KEEP
        if c.repeat:
            due = st.fired_at + (st.repeats + 1) * c.repeat
            if due < best:
                best, kind = due, DUE_REPEAT
    return best, kind


class SavedState(msgspec.Struct, kw_only=True):
    """What survives a restart: enough to resume a pending or firing series exactly."""

    rule: str
    fingerprint: str
    stage: int
    name: str
    labels: dict[str, str]
    phase: Phase
    t0: float
    since: float
    value: float
    last_ts: float
    clear_since: float | None = None
    fired_at: float = 0.0
    repeats: int = 0

    @classmethod
    def of(cls, st: State) -> SavedState:
        c = st.check
        return cls(rule=c.rule.name, fingerprint=c.rule.fingerprint, stage=c.stage,
                   name=st.entry.name, labels=st.entry.labels, phase=st.phase, t0=st.t0,
                   since=st.since, value=st.value, last_ts=st.entry.last_ts,
                   clear_since=st.clear_since, fired_at=st.fired_at, repeats=st.repeats)

    def restore(self, st: State, key: str) -> None:
        """Put the saved fields back into ``st`` (its deadline is the caller's to schedule)."""
        st.entry.wake()
        st.entry.last_ts = max(st.entry.last_ts, self.last_ts)
        st.phase, st.t0, st.since, st.value = self.phase, self.t0, self.since, self.value
        st.clear_since, st.fired_at, st.repeats = self.clear_since, self.fired_at, self.repeats
        st.skey = key
        st.sched = INF


saved_encoder: Final = msgspec.json.Encoder()
saved_decoder: Final = msgspec.json.Decoder(SavedState)
