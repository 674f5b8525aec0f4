"""Durations as users write them (``500ms``, ``30s``, ``1m30s``, ``2h``, ``1d``).

The grammar is Prometheus': one or more number-unit pairs, largest unit first.
Kept in one place because rules, config and CLI flags all take durations.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w))+)$"
DURATION_HINT = "is not a duration (use 30s, 1m30s, 500ms)"

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
