"""Flamegraph ``Frame`` trees: built from StackSamples, merged, diffed, windowed.

The tree type itself is ``flarebus.frame.Frame`` (inclusive values, self
weight derived), shared with the plugin API's exporters.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable

from flarebus.events import Stack, StackSample
from flarebus.frame import ROOT_NAME, Frame


def build(samples: Iterable[StackSample | Stack], root: str = ROOT_NAME) -> Frame:
    """One tree from StackSamples (or bare Stacks): inclusive values are summed weights."""
    tree = Frame(root)
    for sample in samples:
        if isinstance(sample, Stack):
            tree.add(sample.frames, sample.weight)
        else:
            for stack in sample.stacks:
                tree.add(stack.frames, stack.weight)
    return tree


def merge_into(target: Frame, other: Frame) -> Frame:
    """Add ``other``'s values into ``target`` (same position, same name) and return ``target``."""
    target.value += other.value
    for name, child in other.children.items():
        merge_into(target.child(name), child)
    return target


def merge(*trees: Frame) -> Frame:
    """A new tree whose every node is the sum of the trees' nodes at the same path."""
    out = Frame(trees[0].name if trees else ROOT_NAME)
    for tree in trees:
        merge_into(out, tree)
    return out


def scaled(tree: Frame, factor: float) -> Frame:
    return Frame(tree.name, tree.value * factor,
                 (scaled(c, factor) for c in tree.children.values()))


def diff(before: Frame, after: Frame, *, normalize: bool = False) -> Frame:
    """``after - before`` node by node; nodes whose difference is 0 are left out.

    With ``normalize`` the ``before`` window is first scaled to ``after``'s total, so
    two windows of different length compare by share (what got hotter), not by count.
    A tree diffed with itself is a lone root of value 0.
    """
    if normalize and before.value:
        before = scaled(before, after.value / before.value)

    def walk(b: Frame | None, a: Frame | None, name: str) -> Frame | None:
        value = (a.value if a else 0.0) - (b.value if b else 0.0)
        names = dict.fromkeys([*(a.children if a else ()), *(b.children if b else ())])
        kids = [k for k in (walk(b.children.get(n) if b else None,
                                 a.children.get(n) if a else None, n) for n in names) if k]
        if value == 0 and not kids:
            return None
        return Frame(name, value, kids)

    return walk(before, after, after.name) or Frame(after.name)


class RollingWindow:
    """The stacks of one source over the last ``span`` seconds (event time), as a tree on demand.

    Samples are kept (not a running tree) so any shorter window can be asked for and
    old samples fall out exactly; ``max_samples`` bounds memory when a source floods.
    """

    def __init__(self, span: float, *, max_samples: int = 100_000) -> None:
        self.span = span
        self._times: deque[float] = deque()
        self._samples: deque[StackSample] = deque()
        self._max = max_samples
        self.unit = "samples"

    def add(self, sample: StackSample, ts: float) -> None:
        """Keep ``sample`` (stamped ``ts``); out-of-order samples are inserted in place."""
        self.unit = sample.unit
        if self._times and ts < self._times[-1]:
            index = bisect.bisect_right(self._times, ts)
            self._times.insert(index, ts)
            self._samples.insert(index, sample)
        else:
            self._times.append(ts)
            self._samples.append(sample)
        while len(self._times) > self._max:
            self._times.popleft()
            self._samples.popleft()
        self.prune(self._times[-1])

    def prune(self, now: float) -> None:
        cutoff = now - self.span
        while self._times and self._times[0] <= cutoff:  # (now - span, now], like samples()
            self._times.popleft()
            self._samples.popleft()

    def samples(self, seconds: float | None = None, *, now: float | None = None
                ) -> list[StackSample]:
        """Samples with ``ts`` in ``(now - seconds, now]`` (``now`` defaults to the newest)."""
        if not self._times:
            return []
        end = self._times[-1] if now is None else now
        start = end - (self.span if seconds is None else seconds)
        lo = bisect.bisect_right(self._times, start)
        hi = bisect.bisect_right(self._times, end)
        return [self._samples[i] for i in range(lo, hi)]

    def tree(self, seconds: float | None = None, *, now: float | None = None) -> Frame:
        return build(self.samples(seconds, now=now))

    def __len__(self) -> int:
        return len(self._times)


class WindowStore:
    """A RollingWindow per source, created on first sight."""

    def __init__(self, span: float, *, max_samples: int = 100_000) -> None:
        self.span = span
        self._max = max_samples
        self.windows: dict[str, RollingWindow] = {}

    def add(self, sample: StackSample, *, now: float) -> None:
        window = self.windows.get(sample.source)
        if window is None:
            window = self.windows[sample.source] = RollingWindow(self.span,
                                                                 max_samples=self._max)
        window.add(sample, sample.ts if sample.ts is not None else now)

    def get(self, source: str) -> RollingWindow | None:
        return self.windows.get(source)
