"""The one retry backoff (flarebus/backoff.py): exponential ceilings, full jitter under them."""

from __future__ import annotations

import random
import statistics

from flarebus.backoff import Backoff


class TestCeiling:
    """The longest delay after n failures."""

    def test_doubles_from_initial_up_to_the_maximum(self) -> None:
        """initial, 2x, 4x ... and never above the maximum."""
        b = Backoff(0.5, 3.0)
        assert [b.ceiling(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]

    def test_attempt_zero_or_less_is_the_first(self) -> None:
        """A try count that starts at 0 gets the initial delay, not half of it."""
        assert Backoff(0.5, 3.0).ceiling(0) == Backoff(0.5, 3.0).ceiling(1) == 0.5

    def test_a_retry_forever_count_never_overflows(self) -> None:
        """The trigger publisher retries forever: a huge attempt number is just the maximum."""
        b = Backoff(0.1, 5.0)
        assert b.ceiling(10**6) == 5.0
        assert 0.0 <= b.delay(10**6, random.Random(3)) < 5.0


class TestJitter:
    """Delays are drawn uniformly between 0 and the ceiling ("full jitter")."""

    def test_every_delay_is_within_its_window(self) -> None:
        """For each attempt, 0 <= delay < ceiling, with a fixed seed and the default source."""
        b = Backoff(0.05, 2.0)
        rng = random.Random(11)
        for attempt in range(1, 10):
            top = b.ceiling(attempt)
            assert all(0.0 <= b.delay(attempt, rng) < top for _ in range(2000))
            assert all(0.0 <= b.delay(attempt) < top for _ in range(200))

    def test_delays_fill_the_window_evenly(self) -> None:
        """10,000 draws: mean and quartiles of a uniform window, every tenth of it used."""
        b = Backoff(1.0, 60.0)
        rng = random.Random(7)
        top = b.ceiling(4)  # 8 s
        draws = [b.delay(4, rng) / top for _ in range(10_000)]
        assert abs(statistics.fmean(draws) - 0.5) < 0.02
        q1, q2, q3 = statistics.quantiles(draws, n=4)
        assert abs(q1 - 0.25) < 0.02 and abs(q2 - 0.5) < 0.02 and abs(q3 - 0.75) < 0.02
        bins = [0] * 10
        for d in draws:
            bins[int(d * 10)] += 1
        assert all(850 < n < 1150 for n in bins), bins

    def test_workers_failing_together_do_not_retry_together(self) -> None:
        """100 workers nak the same trigger on try 3: their delays spread over the window."""
        b = Backoff(1.0, 60.0)
        delays = sorted(b.delay(3, random.Random(seed)) for seed in range(100))
        assert len({round(d, 3) for d in delays}) > 95  # no lockstep
        assert delays[0] < 0.5 and delays[-1] > 3.5  # the whole 0..4 s window is used
