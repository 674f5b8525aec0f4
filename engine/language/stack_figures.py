"""The figure a stack rule compares with its threshold, computed from StackSamples.

``stack: {source: api, frame: "db.query*", measure: share}``:

- ``share``: the weight of stacks holding a frame that matches, over all weight (0..1);
- ``weight_per_second`` (or ``weight``): that matching weight per second (over
  ``seconds``: the time since the series' previous stack sample);
- ``stacks``: the number of distinct stacks (threads/call paths) in the sample.

``frame`` is a glob (``fnmatch``, case-sensitive) or, prefixed with ``~``, a regular
expression searched in the frame name. Pure functions: the evaluator feeds each
StackSample's figure into the same per-series state machine metric rules use.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Literal, Protocol

from flarebus.events import Stack, StackSample

Measure = Literal["share", "weight", "weight_per_second", "stacks"]
MEASURES: tuple[Measure, ...] = ("share", "weight_per_second", "stacks")


@lru_cache(maxsize=256)
def frame_matcher(pattern: str) -> Callable[[str], re.Match[str] | None]:
    """A test of frame names (truthy on a match): ``~regex`` (searched) or a glob (whole name)."""
    if pattern.startswith("~"):
        return re.compile(pattern[1:]).search
    return re.compile(fnmatch.translate(pattern)).match


def figure(stacks: Iterable[Stack], measure: Measure, pattern: str | None = None,
           *, seconds: float = 1.0) -> float:
    """The figure of ``measure`` for these stacks (``pattern`` needed for share and weight)."""
    if measure == "stacks":
        return float(sum(1 for _ in stacks))
    if pattern is None:
        raise ValueError(f"measure {measure!r} needs a frame pattern")
    matches = frame_matcher(pattern)
    total = hit = 0.0
    for stack in stacks:
        total += stack.weight
        if any(matches(name) for name in stack.frames):
            hit += stack.weight
    if measure == "share":
        return hit / total if total else 0.0
    if measure in ("weight", "weight_per_second"):
        return hit / seconds if seconds > 0 else hit
    raise ValueError(f"unknown measure {measure!r} (use {', '.join(MEASURES)})")


class _Spec(Protocol):
    @property
    def frame(self) -> str: ...
    @property
    def measure(self) -> str: ...


#: The evaluator's seam for stack rules: (the rule's ``stack:`` spec, the sample, seconds
#: since the series' previous stack sample or None) -> the figure, or None for no figure yet.
StackMeasure = Callable[[_Spec, StackSample, float | None], float | None]


def stack_measure(spec: _Spec, sample: StackSample, interval: float | None) -> float | None:
    """The evaluator's StackMeasure seam: the figure of one StackSample for one stack rule.

    ``weight`` is per second over the time since the series' previous stack sample
    (``interval``), so the first sample of a series gives no figure for it.
    """
    if spec.measure in ("weight", "weight_per_second"):
        if not interval or interval <= 0:
            return None
        return figure(sample.stacks, "weight", spec.frame, seconds=interval)
    return figure(sample.stacks, spec.measure, spec.frame)  # type: ignore[arg-type]
