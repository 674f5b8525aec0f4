"""Durations as users write them (``500ms``, ``30s``, ``1m30s``, ``2h``, ``1d``).

The grammar is Prometheus': one or more number-unit pairs, largest unit first.
Kept in one place because rules, config and CLI flags all take durations.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from flarebus.problems import short

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+)$"
DURATION_HINT = "is not a duration (use 30s, 1m30s, 500ms)"
#: A rate limit: ``N/DURATION`` (``20/1m``) or ``none`` (flarebus.gate_config reads it).
RATE_PATTERN = r"^(none|[1-9][0-9]*/([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+)$"
RATE_HINT = "is not a rate (use N/DURATION, e.g. 20/1m, or none)"
#: The same language in one regex, largest unit first and once each, for the JSON Schemas
#: (parse_duration checks the order itself, to say what is wrong).
ORDERED_DURATION_PATTERN = "^(0|(?=[0-9])" + "".join(
    rf"([0-9]+(\.[0-9]+)?{unit})?" for unit in ("w", "d", "h", "m", "s", "ms")) + ")$"
ZERO_DURATION_PATTERN = r"^(0|(0+(\.0+)?(ms|s|m|h|d|w))+)$"

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_ORDER = ["w", "d", "h", "m", "s", "ms"]
_whole = re.compile(DURATION_PATTERN)
_part = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``; raises ValueError with the hint users see in error messages."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} {DURATION_HINT}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"{text!r} {DURATION_HINT}")
        return float(text)
    cleaned = text.strip()
    if not _whole.match(cleaned):
        raise ValueError(f"{text!r} {DURATION_HINT}")
    if cleaned == "0":
        return 0.0
    parts = _part.findall(cleaned)
    units = [unit for _, unit in parts]
    if [_ORDER.index(u) for u in units] != sorted(_ORDER.index(u) for u in set(units)):
        raise ValueError(f"{text!r} {DURATION_HINT}: units must go largest first, once each")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


class _Seconds(float):
    """A duration field of a rule or config file: written "30s", decoded to seconds.

    A msgspec custom type (see flarebus.typed), because a float field cannot
    parse text. A number is refused where a duration is written: 30 what?
    """

    json_schema: ClassVar[dict[str, Any]] = {
        "type": "string", "pattern": ORDERED_DURATION_PATTERN, "x-hint": DURATION_HINT,
        "examples": ["30s", "1m30s", "500ms"]}

    @classmethod
    def from_yaml(cls, value: Any) -> float:
        if not isinstance(value, str) or not _whole.match(value):
            raise ValueError(f"{short(value)} {DURATION_HINT}")
        return cls(parse_duration(value))


class _PositiveSeconds(_Seconds):
    """A duration that must be longer than 0s (an interval, a window)."""

    json_schema: ClassVar[dict[str, Any]] = {
        **_Seconds.json_schema, "not": {"pattern": ZERO_DURATION_PATTERN},
        "examples": ["30s", "1m", "5m"]}

    @classmethod
    def from_yaml(cls, value: Any) -> float:
        seconds = super().from_yaml(value)
        if seconds <= 0:
            raise ValueError("must be longer than 0s")
        return seconds


# To type checkers a duration is the float it is (so ``NatsSettings(connect_timeout=2.0)``
# type-checks); to msgspec it is the custom type that parses "2s".
if TYPE_CHECKING:
    Seconds: TypeAlias = float
    PositiveSeconds: TypeAlias = float
else:
    Seconds = _Seconds
    PositiveSeconds = _PositiveSeconds


def format_duration(seconds: float) -> str:
    """The shortest readable form: 90 -> '1m30s', 0.5 -> '500ms', 0 -> '0s'."""
    if seconds <= 0:
        return "0s"
    millis = round(seconds * 1000)
    out = []
    for unit in ("d", "h", "m", "s"):
        size = int(_UNITS[unit] * 1000)
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    if millis:
        out.append(f"{millis}ms")
    return "".join(out) or "0s"
