"""The evaluator's next deadline as one asyncio timer on the engine's (wall) clock.

The evaluator knows every deadline (``for``, ``keep_firing_for``,
``missing.after``, ``repeat``) in one heap and answers ``next_deadline()``;
the engine needs exactly one wake-up, at the earliest of them. That is one
``loop.call_later`` handle: moved (cancelled and set again) only when a sample,
a timer run or a reload brings an earlier deadline, and never moved later
(waking early costs one ``advance`` that fires nothing). A scheduler library
would add jobs, triggers and misfire rules to what is one instant: an asyncio
handle always runs, however late the loop gets to it, so no deadline can
misfire, and its callback runs on the loop that runs ingest, so the evaluator
needs no lock.

Deadlines are event time, compared with the samples' ``ts`` (wall clocks),
while the loop sleeps on the monotonic clock, which stops while a machine is
suspended and ignores clock steps: the timer re-reads the wall clock at least
every ``MAX_SLEEP`` seconds and sleeps on if the deadline is still ahead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

log = logging.getLogger("flarebus.engine.timers")

#: The longest single sleep; after it the wall clock is compared with the deadline again.
MAX_SLEEP: Final = 30.0


class DeadlineTimer:
    """One wake-up at the evaluator's next deadline; ``on_due(now)`` runs when it is reached."""

    def __init__(self, on_due: Callable[[float], None], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._on_due = on_due
        self._clock = clock
        self._at: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def scheduled_at(self) -> float | None:
        """The deadline the timer is set for (event-time seconds); None when it is not set."""
        return self._at

    def schedule(self, deadline: float | None) -> None:
        """Make sure the timer goes off no later than ``deadline`` (event-time seconds).

        A timer already set for an earlier instant is kept: deadlines such as
        ``missing.after`` move later with every sample, and following them would
        cost a timer update per batch.
        """
        if deadline is None or (self._at is not None and deadline >= self._at):
            return
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._arm(deadline)

    def stop(self) -> None:
        """Cancel the wake-up (the engine is stopping)."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None

    def _arm(self, deadline: float) -> None:
        delay = min(max(deadline - self._clock(), 0.0), MAX_SLEEP)
        self._handle = asyncio.get_running_loop().call_later(delay, self._wake, deadline)

    def _wake(self, deadline: float) -> None:
        now = self._clock()
        if now < deadline:  # a capped sleep, a suspend or a clock step: not there yet
            self._arm(deadline)
            return
        self._handle = None
        self._at = None  # on_due sets the timer for the next deadline
        try:
            self._on_due(now)
        except Exception:  # a bug in one run must not stop all future timers
            log.exception("timer run at %.3f failed", deadline)
