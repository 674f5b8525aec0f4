"""The leaves of an expression: the input series of one selector, and when each is stale.

Staleness lives here and only here (``Leaf.live``): an instant selector's series
holds its last value until ``lookback`` after it (the rule's ``missing.after``,
Prometheus' 5-minute lookback by default), or until it is ended explicitly
(``Leaf.end``: the hook for staleness markers, which end a series at the
marker's instant). A range selector's series holds the samples of its window
``(t - range, t]``; as samples leave the window its value is recomputed.

Each series has at most one wake-up in the shared heap at a time (``wake``),
like the machine's deadlines: a sample that moves staleness later pushes
nothing, and a wake-up that finds its series refreshed re-queues itself.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from flarebus.engine.language.expr.ast import Selector

INF = math.inf
Key = tuple[tuple[str, str], ...]


class Waker(Protocol):
    """What a heap entry wakes: a leaf (for one of its series), or a restored output's check."""

    runtime: Any

    def woken(self, s: Any, t: float) -> bool: ...


Heap = list[tuple[float, int, Waker, Any]]


def key_of(labels: dict[str, str]) -> Key:
    """The canonical identity of a label set."""
    return tuple(sorted(labels.items()))


class Series:
    """One input series of one selector."""

    __slots__ = ("alias", "dead", "dirty", "ended", "key", "labels", "ts", "value", "wake",
                 "window")

    def __init__(self, alias: Any, labels: dict[str, str], windowed: bool) -> None:
        self.alias = alias
        self.labels = labels
        self.key = key_of(labels)
        self.ts = -INF
        self.value = 0.0
        self.ended = -INF  # the instant an explicit end (a staleness marker) took effect
        self.wake = INF  # due time of this series' live heap entry
        self.dirty = False
        self.dead = False  # dropped by its leaf: a later sample starts a new one
        self.window: deque[tuple[float, float]] | None = deque() if windowed else None


class Leaf:
    """A selector's series and their current values (``value``/``labels`` by key).

    ``fn`` makes it a range function over each series' own window (``rate(x[5m])``):
    then ``value`` holds the function's result per series.
    """

    def __init__(self, selector: Selector, lookback: float, heap: Heap,
                 seq: itertools.count[int], owns: Callable[[dict[str, str]], bool] | None,
                 fn: Callable[..., float | None] | None = None,
                 extra: tuple[float, ...] = ()) -> None:
        self.selector = selector
        self.lookback = lookback
        self.range = selector.range or 0.0
        self.fn = fn
        self.extra = extra
        self.heap = heap
        self.seq = seq
        self.owns = owns
        self.series: dict[Any, Series | None] = {}  # alias as received -> series, None: no match
        self.by_key: dict[Key, Series] = {}  # the same series under every label order
        self.dirty: list[Series] = []
        self.value: dict[Key, float] = {}
        self.labels: dict[Key, dict[str, str]] = {}
        self.runtime: Any = None  # the rule runtime this leaf belongs to (set by it)

    # ------------------------------------------------------------------ input

    def sample(self, name: str, alias: Any, labels: dict[str, str], ts: float,
               value: float) -> bool:
        """Apply one sample; True when it made this leaf dirty (it has something to evaluate).

        The caller marks the rule for evaluation only then: one set operation per
        leaf and instant, not per sample.
        """
        s = self.series.get(alias)
        if s is None or s.dead:
            if s is None and alias in self.series:
                return False  # known not to match
            if not self.selector.matches(name, labels) or (
                    self.owns is not None and not self.owns(labels)):
                if len(self.series) < 200_000:  # bounded, like the evaluator's skip set
                    self.series[alias] = None
                return False
            s = self._series_of(alias, labels)
        if ts < s.ts:
            return False
        s.ts = ts
        s.value = value
        window = s.window
        if window is not None:
            if window and window[-1][0] == ts:
                window[-1] = (ts, value)  # one sample per instant: the later one wins
            else:
                window.append((ts, value))
        if s.wake == INF:
            self._push(s, self._due(s))
        if s.dirty:
            return False
        s.dirty = True
        dirty = self.dirty
        dirty.append(s)
        return len(dirty) == 1

    def _series_of(self, alias: Any, labels: dict[str, str]) -> Series:
        key = key_of(labels)
        s = self.by_key.get(key)
        if s is None:
            s = self.by_key[key] = Series(alias, labels, self.fn is not None)
        self.series[alias] = s
        return s

    def end(self, alias: Any, ts: float) -> bool:
        """The series ended at ``ts`` (a staleness marker): gone from the next evaluation on."""
        s = self.series.get(alias)
        if s is None or s.dead or ts < s.ts:
            return False
        s.ended = ts
        if s.window is not None:
            s.window.clear()
        if not s.dirty:
            s.dirty = True
            self.dirty.append(s)
        return True

    def live(self, s: Series, t: float) -> bool:
        """The one staleness rule: a value holds until ``lookback`` after it, or an end."""
        return s.ended < s.ts and t - s.ts < self.lookback

    # -------------------------------------------------------------- wake-ups

    def _due(self, s: Series) -> float:
        if s.window is not None:
            return s.window[0][0] + self.range if s.window else INF
        return s.ts + self.lookback

    def _push(self, s: Series, due: float) -> None:
        if due < INF:
            s.wake = due
            heapq.heappush(self.heap, (due, next(self.seq), self, s))

    def woken(self, s: Series, t: float) -> bool:
        """A wake-up of ``s`` at ``t`` came up: True when the series changes at ``t``."""
        if s.wake != t:
            return False  # superseded
        s.wake = INF
        if s.window is not None:
            self._trim(s, t)
        due = self._due(s)
        if due > t:
            self._push(s, due)
            if s.window is None:
                return False  # refreshed since: not stale yet
        if not s.dirty:
            s.dirty = True
            self.dirty.append(s)
        return True

    def _trim(self, s: Series, t: float) -> None:
        window = s.window
        assert window is not None
        cutoff = t - self.range
        while window and window[0][0] <= cutoff:
            window.popleft()

    # ------------------------------------------------------------ evaluation

    def evaluate(self, t: float) -> list[Key]:
        """The keys whose value changed at ``t`` (appeared, moved or vanished)."""
        changed = []
        lookback = self.lookback
        values, labels = self.value, self.labels
        for s in self.dirty:
            s.dirty = False
            key = s.key
            result: float | None
            if self.fn is None:  # Leaf.live, inline: this runs for every changed series
                result = s.value if s.ended < s.ts and t - s.ts < lookback else None
            else:
                self._trim(s, t)
                window = s.window
                result = self.fn(window, t, self.range, *self.extra) if window else None
            if result is None:
                if key in values:
                    del values[key]
                    del labels[key]
                    changed.append(key)
                if self.fn is None or not s.window:
                    self._drop(s)
            else:
                if key not in values:
                    labels[key] = s.labels
                values[key] = result
                changed.append(key)
        self.dirty.clear()
        return changed

    def _drop(self, s: Series) -> None:
        """A series with nothing left: forget it (a later sample starts it afresh)."""
        if self.series.get(s.alias) is s:
            del self.series[s.alias]
        if self.by_key.get(s.key) is s:
            del self.by_key[s.key]
        s.dead = True
        s.wake = -INF  # any heap entry it still has is superseded
