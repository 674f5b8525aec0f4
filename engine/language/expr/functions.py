"""Prometheus' functions, as pure functions of a window of samples (or of buckets).

Each follows Prometheus' own code (promql/functions.go and quantile.go), so a
value flarebus computes at an instant is the value Prometheus computes at that
instant from the same samples. Windows are left-open, ``(t - range, t]``, as in
Prometheus 3 and as the plain rules' ``reduce`` windows; ``rate``, ``increase``
and ``delta`` extrapolate towards the window's edges exactly as Prometheus does,
which is why they take the evaluation time ``t`` and the ``range``.

A function returns None where Prometheus returns no sample (too few samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Window = Sequence[tuple[float, float]]  # (ts, value), oldest first


def _extrapolated(w: Window, t: float, rng: float, counter: bool, rate: bool) -> float | None:
    if len(w) < 2:
        return None
    first_t, first_v = w[0]
    last_t, last_v = w[-1]
    result = last_v - first_v
    if counter:
        previous = first_v
        for _, v in w:
            if v < previous:  # a counter reset: the counter went on from 0
                result += previous
            previous = v
    to_start = first_t - (t - rng)
    to_end = t - last_t
    sampled = last_t - first_t
    average = sampled / (len(w) - 1)
    if counter and result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        if to_zero < to_start:
            to_start = to_zero
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    return result / rng if rate else result


def rate(w: Window, t: float, rng: float) -> float | None:
    return _extrapolated(w, t, rng, True, True)


def increase(w: Window, t: float, rng: float) -> float | None:
    return _extrapolated(w, t, rng, True, False)


def delta(w: Window, t: float, rng: float) -> float | None:
    return _extrapolated(w, t, rng, False, False)


def linear_regression(w: Window, intercept_time: float) -> tuple[float, float]:
    """(slope per second, value at ``intercept_time``): least squares, as Prometheus."""
    first = w[0][1]
    if all(v == first for _, v in w):
        return (math.nan, math.nan) if math.isinf(first) else (0.0, first)
    n = float(len(w))
    xs = [ts - intercept_time for ts, _ in w]
    ys = [v for _, v in w]
    sum_x, sum_y = math.fsum(xs), math.fsum(ys)
    sum_xy = math.fsum(x * y for x, y in zip(xs, ys, strict=True))
    sum_x2 = math.fsum(x * x for x in xs)
    cov_xy = sum_xy - sum_x * sum_y / n
    var_x = sum_x2 - sum_x * sum_x / n
    slope = cov_xy / var_x if var_x else math.nan
    return slope, sum_y / n - slope * sum_x / n


def deriv(w: Window, t: float, rng: float) -> float | None:
    if len(w) < 2:
        return None
    return linear_regression(w, w[0][0])[0]


def predict_linear(w: Window, t: float, rng: float, seconds: float) -> float | None:
    if len(w) < 2:
        return None
    slope, intercept = linear_regression(w, t)
    return slope * seconds + intercept


def avg_over_time(w: Window, t: float, rng: float) -> float | None:
    return math.fsum(v for _, v in w) / len(w) if w else None


def sum_over_time(w: Window, t: float, rng: float) -> float | None:
    return math.fsum(v for _, v in w) if w else None


def count_over_time(w: Window, t: float, rng: float) -> float | None:
    return float(len(w)) if w else None


def min_over_time(w: Window, t: float, rng: float) -> float | None:
    return _nan_min([v for _, v in w]) if w else None


def max_over_time(w: Window, t: float, rng: float) -> float | None:
    return _nan_max([v for _, v in w]) if w else None


def quantile_over_time(w: Window, t: float, rng: float, phi: float) -> float | None:
    return quantile(phi, [v for _, v in w]) if w else None


def _nan_min(values: list[float]) -> float:
    """min as Prometheus: NaN only when every value is NaN."""
    real = [v for v in values if not math.isnan(v)]
    return min(real) if real else math.nan


def _nan_max(values: list[float]) -> float:
    real = [v for v in values if not math.isnan(v)]
    return max(real) if real else math.nan


def quantile(phi: float, values: list[float]) -> float:
    """The φ-quantile with linear interpolation between the closest ranks (Prometheus)."""
    if math.isnan(phi) or not values:
        return math.nan
    if phi < 0:
        return -math.inf
    if phi > 1:
        return math.inf
    ordered = sorted(values)
    rank = phi * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def bucket_quantile(phi: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile over (upper bound, cumulative count) buckets, as Prometheus."""
    if math.isnan(phi):
        return math.nan
    if phi < 0:
        return -math.inf
    if phi > 1:
        return math.inf
    merged: dict[float, float] = {}
    for le, count in buckets:  # series with the same le (after aggregation) add up
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    if not ordered or ordered[-1][0] != math.inf:
        return math.nan
    highest = -math.inf
    fixed = []
    for le, count in ordered:  # cumulative counts never fall (scrape races can make them)
        highest = max(highest, count)
        fixed.append((le, highest))
    if len(fixed) < 2:
        return math.nan
    observations = fixed[-1][1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = phi * observations
    b = next((i for i, (_, c) in enumerate(fixed[:-1]) if c >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    return start + (end - start) * (rank / count)


def aggregate(op: str, values: list[float]) -> float:
    """sum avg min max count of one group's values (at least one), from scratch."""
    if op == "sum":
        return math.fsum(values)
    if op == "avg":
        return math.fsum(values) / len(values)
    if op == "count":
        return float(len(values))
    return _nan_min(values) if op == "min" else _nan_max(values)


def arithmetic(op: str, a: float, b: float) -> float:
    """``a op b`` with IEEE results where Python raises (x/0 is ±Inf, 0/0 NaN), as Go."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


RangeFn = Callable[..., float | None]


@dataclass(frozen=True, slots=True)
class Signature:
    """What a function takes: argument kinds in order (``scalar``, ``range``, ``instant``)."""

    args: tuple[str, ...]
    range_fn: RangeFn | None = None  # the window function, for range-vector functions
    scalar_first: bool = False  # quantile_over_time(φ, x[5m]): the scalar comes first


FUNCTIONS: dict[str, Signature] = {
    "rate": Signature(("range",), rate),
    "increase": Signature(("range",), increase),
    "delta": Signature(("range",), delta),
    "deriv": Signature(("range",), deriv),
    "predict_linear": Signature(("range", "scalar"), predict_linear),
    "avg_over_time": Signature(("range",), avg_over_time),
    "min_over_time": Signature(("range",), min_over_time),
    "max_over_time": Signature(("range",), max_over_time),
    "sum_over_time": Signature(("range",), sum_over_time),
    "count_over_time": Signature(("range",), count_over_time),
    "quantile_over_time": Signature(("scalar", "range"), quantile_over_time, True),
    "histogram_quantile": Signature(("scalar", "instant")),
    "absent": Signature(("instant",)),
}
