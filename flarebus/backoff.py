"""Exponential backoff with full jitter: the one retry delay every role uses.

Without jitter, every client that failed together retries together: the
workers that all nak'ed a trigger on one broken webhook hit it again in the
same millisecond, on every try. "Full jitter" (the delay drawn uniformly
between 0 and the exponential ceiling) spreads them over the whole window and,
of the usual schemes, does the least total work for a contended resource.

A plain function of the attempt number rather than a retry decorator
(tenacity, stamina): a worker's retry is a nak delay handed to JetStream and
run by whichever worker gets the redelivery, with the try count taken from
the delivery count, and a sampler's retry is a time its schedule waits for;
neither is a call to wrap. The trigger publisher's loop uses the same delays.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

#: Past this exponent the ceiling is the maximum for any sane initial delay, and a
#: retry-forever counter would otherwise overflow ``2.0 ** n`` after ~1000 attempts.
MAX_EXPONENT: Final = 60

_random = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for retries: ``initial`` doubling after each failure, capped at ``maximum``."""

    initial: float
    maximum: float

    def ceiling(self, attempt: int) -> float:
        """The longest delay after ``attempt`` failures (1, 2, ...): initial, 2x, 4x ... max."""
        exponent = min(max(attempt - 1, 0), MAX_EXPONENT)
        return min(self.maximum, self.initial * 2.0 ** exponent)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A delay drawn uniformly from ``[0, ceiling(attempt))`` (``rng``: for a fixed seed)."""
        return (rng or _random).random() * self.ceiling(attempt)
