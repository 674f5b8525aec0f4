"""Prometheus' functions and operators, value by value (worked out from Prometheus' code)."""

from __future__ import annotations

import math

import pytest

from flarebus.engine.language.expr import functions as f

RAMP = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
THREE = [(0.0, 1.0), (1.0, 2.0), (2.0, 6.0)]


@pytest.mark.parametrize(("fn", "window", "t", "rng", "expected"), [
    # 4 over 4 s, extrapolated to the counter's zero at 0 s: 4, per second of the 5 s range
    (f.rate, RAMP, 4.0, 5.0, 0.8),
    (f.increase, RAMP, 4.0, 5.0, 4.0),
    # a reset (6 -> 1) counts the 6 before it; 3 over 3 s extrapolated by 1 s to the start
    (f.increase, [(0.0, 5.0), (1.0, 6.0), (2.0, 1.0), (3.0, 2.0)], 3.0, 4.0, 4.0),
    # a gauge falls 6 over 2 s; extrapolated 2 s to the window's start (< 1.1 x 2 s)
    (f.delta, [(0.0, 10.0), (2.0, 4.0)], 2.0, 4.0, -12.0),
    # far from both edges (more than 1.1 x the interval): half an interval each side
    (f.delta, [(10.0, 0.0), (12.0, 4.0)], 20.0, 20.0, 8.0),
    (f.rate, [(0.0, 1.0)], 0.0, 5.0, None),  # one sample: no rate
    (f.deriv, [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2.0, 5.0, 2.0),
    (f.deriv, [(0.0, 4.0), (1.0, 4.0)], 1.0, 5.0, 0.0),
    (f.avg_over_time, THREE, 2.0, 5.0, 3.0),
    (f.min_over_time, THREE, 2.0, 5.0, 1.0),
    (f.max_over_time, THREE, 2.0, 5.0, 6.0),
    (f.sum_over_time, THREE, 2.0, 5.0, 9.0),
    (f.count_over_time, THREE, 2.0, 5.0, 3.0),
    (f.avg_over_time, [], 2.0, 5.0, None),
])
def test_range_functions(fn: f.RangeFn, window: f.Window, t: float, rng: float,
                         expected: float | None) -> None:
    """Each range function's value for a window, as Prometheus computes it."""
    assert fn(window, t, rng) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("phi", "expected"), [(0.5, 2.0), (0.25, 1.5), (0.0, 1.0), (1.0, 6.0),
                                               (1.5, math.inf), (-1.0, -math.inf)])
def test_quantile_over_time(phi: float, expected: float) -> None:
    """Linear interpolation between closest ranks; φ outside [0, 1] is ±Inf."""
    assert f.quantile_over_time(THREE, 2.0, 5.0, phi) == expected


def test_predict_linear_is_the_regression_at_t_plus_seconds() -> None:
    """1, 3, 5 at 0, 1, 2 s: 5 at t = 2, 2 per second, so 25 ten seconds later."""
    assert f.predict_linear([(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], 2.0, 5.0, 10.0) == \
        pytest.approx(25.0)


BUCKETS = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]


@pytest.mark.parametrize(("phi", "buckets", "expected"), [
    (0.5, BUCKETS, 1.0),
    (0.75, BUCKETS, 1.5),
    (1.0, BUCKETS, 2.0),
    (0.9, [(1.0, 10.0), (math.inf, 20.0)], 1.0),  # in the +Inf bucket: the highest bound
    (0.5, [(1.0, 10.0), (2.0, 20.0)], math.nan),  # no +Inf bucket
    (0.5, [(1.0, 0.0), (math.inf, 0.0)], math.nan),  # no observations
    (0.5, [(1.0, 10.0), (2.0, 8.0), (math.inf, 20.0)], 1.0),  # non-monotonic counts mended
    (0.5, [(1.0, 4.0), (1.0, 6.0), (2.0, 20.0), (math.inf, 20.0)], 1.0),  # same le adds up
    (2.0, BUCKETS, math.inf),
])
def test_histogram_quantile(phi: float, buckets: list[tuple[float, float]],
                            expected: float) -> None:
    """bucket_quantile: linear within the bucket the rank falls in, Prometheus' edge cases."""
    got = f.bucket_quantile(phi, buckets)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


@pytest.mark.parametrize(("op", "values", "expected"), [
    ("sum", [1.0, 2.0, 3.5], 6.5), ("avg", [1.0, 2.0, 6.0], 3.0), ("count", [5.0, 5.0], 2.0),
    ("min", [3.0, math.nan, 1.0], 1.0), ("max", [3.0, math.nan, 1.0], 3.0),
    ("max", [math.nan], math.nan),
])
def test_aggregations(op: str, values: list[float], expected: float) -> None:
    """sum avg count min max of a group; min/max skip NaN unless all are NaN."""
    got = f.aggregate(op, values)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected


@pytest.mark.parametrize(("op", "a", "b", "expected"), [
    ("+", 1.0, 2.0, 3.0), ("-", 1.0, 2.0, -1.0), ("*", 3.0, 2.0, 6.0), ("/", 3.0, 2.0, 1.5),
    ("/", 1.0, 0.0, math.inf), ("/", -1.0, 0.0, -math.inf), ("/", 0.0, 0.0, math.nan),
    ("/", 1.0, -0.0, -math.inf),
])
def test_arithmetic(op: str, a: float, b: float, expected: float) -> None:
    """+ - * / with IEEE results where Python would raise."""
    got = f.arithmetic(op, a, b)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
