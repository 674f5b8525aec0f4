"""Thresholds (``> 80``, ``<= 0.5``, ``!= 0``) and the set logic the loader checks them with.

A threshold is a set of values. ``clear`` must not overlap ``when`` (a value
cannot both start and end an alert), and an ``escalate`` stage must be a strict
subset of the base (it is "stricter"). Both are decided exactly, by testing one
value in each region the thresholds' boundaries cut the number line into.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

from flarebus.problems import short

THRESHOLD_PATTERN = (r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
                     r"(?:[eE][-+]?[0-9]+)?)\s*$")
THRESHOLD_RE = re.compile(THRESHOLD_PATTERN)
THRESHOLD_HINT = 'is not a threshold (use "> 80", "<= 0.5", "!= 0"; quote it in YAML)'

# value OP t is written as partial(reversed_op, t)(value), a C call on the hot path.
_TESTS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.lt, ">=": operator.le, "<": operator.gt, "<=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}


class Threshold:
    """``op value``; ``test(x)`` is True when ``x op value`` holds.

    Also the msgspec custom type of ``when:`` and ``clear:`` (see flarebus.typed):
    a plain class rather than a dataclass, which msgspec would decode from a
    mapping instead of parsing the text.
    """

    __slots__ = ("op", "source", "test", "value")

    json_schema: ClassVar[dict[str, Any]] = {
        "type": "string", "pattern": THRESHOLD_PATTERN, "x-hint": THRESHOLD_HINT,
        "examples": ["> 80", "<= 0.5", "!= 0"]}

    def __init__(self, op: str, value: float, source: str | None = None) -> None:
        self.op = op
        self.value = value
        self.test: Callable[[float], bool] = partial(_TESTS[op], value)
        self.source = self.text if source is None else source  # as the user wrote it

    @classmethod
    def from_yaml(cls, value: Any) -> Threshold:
        if not isinstance(value, str) or not THRESHOLD_RE.match(value):
            raise ValueError(f"{short(value)} {THRESHOLD_HINT}")
        return parse_threshold(value)

    @property
    def text(self) -> str:
        """The canonical form put into triggers: ``> 80``."""
        number = int(self.value) if self.value.is_integer() and abs(self.value) < 1e15 \
            else self.value
        return f"{self.op} {number}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Threshold):
            return NotImplemented
        return (self.op, self.value) == (other.op, other.value)

    def __hash__(self) -> int:
        return hash((self.op, self.value))

    def __repr__(self) -> str:
        return f"Threshold({self.text!r})"


def parse_threshold(text: str) -> Threshold:
    """``"> 80"`` -> Threshold; ValueError with the user-facing hint otherwise."""
    match = THRESHOLD_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} {THRESHOLD_HINT}")
    op, number = match.groups()
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"{text!r}: the number is too large")
    return Threshold(op, value, text)


def _probes(*thresholds: Threshold) -> list[float]:
    """One value in every region (and on every boundary) the thresholds cut the line into."""
    points = sorted({t.value for t in thresholds})
    probes = [points[0] - 1.0, points[-1] + 1.0, *points]
    probes += [(a + b) / 2 for a, b in itertools.pairwise(points)]
    probes += [math.nextafter(p, -math.inf) for p in points]
    probes += [math.nextafter(p, math.inf) for p in points]
    return probes


def overlap(a: Threshold, b: Threshold) -> float | None:
    """A value for which both hold, or None when they are disjoint."""
    return next((p for p in _probes(a, b) if a.test(p) and b.test(p)), None)


def stricter(stage: Threshold, base: Threshold) -> bool:
    """True when every value that passes ``stage`` passes ``base``, and some pass only ``base``."""
    probes = _probes(stage, base)
    subset = all(base.test(p) for p in probes if stage.test(p))
    proper = any(base.test(p) and not stage.test(p) for p in probes)
    return subset and proper
