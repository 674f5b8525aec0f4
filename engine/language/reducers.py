"""Window reducers: ``reduce: {fn, over}`` evaluates an aggregate of the last ``over`` seconds.

Pure functions of the window (``(ts, value)`` pairs, oldest first), with
Prometheus' definitions where it has one (``rate`` counts a counter reset's
new value as increase; quantiles interpolate linearly), so a rule reads the
same as the PromQL a user already knows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The quantile reducers and their q.
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def reduce_window(fn: str, window: Sequence[tuple[float, float]]) -> float | None:
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
    if fn == "rate":
        return rate(window)
    return quantile(QUANTILES[fn], [v for _, v in window])


def rate(window: Sequence[tuple[float, float]]) -> float | None:
    """Per-second increase; a drop is a counter reset, whose new value counts as increase."""
    if len(window) < 2:
        return None
    increase, prev = 0.0, window[0][1]
    for _, v in window:
        increase += v - prev if v >= prev else v
        prev = v
    span = window[-1][0] - window[0][0]
    return increase / span if span > 0 else None


def quantile(q: float, values: list[float]) -> float:
    """Prometheus' ``quantile``: linear interpolation between the closest ranks."""
    values.sort()
    rank = q * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)
