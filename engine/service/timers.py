"""The evaluator's next deadline, scheduled with APScheduler on the engine's (wall) clock.

The evaluator knows every deadline (``for``, ``keep_firing_for``,
``missing.after``, ``repeat``) and answers ``next_deadline()``; the engine keeps
exactly one APScheduler date job at that instant. When it runs, the
evaluator's ``advance`` fires only what is due and the job is set again for
the next deadline. One job, rescheduled, costs the same for one series or a
million; the evaluator's own deadline index decides what is affected.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger("flarebus.engine.timers")

JOB_ID = "flarebus-next-deadline"


class DeadlineTimer:
    """Keeps one APScheduler job at the evaluator's next deadline."""

    def __init__(self, on_due: Callable[[float], None], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._on_due = on_due
        self._clock = clock
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1})
        self._at: float | None = None

    @property
    def scheduled_at(self) -> float | None:
        return self._at

    def start(self) -> None:
        self._scheduler.start()

    def cancel(self) -> None:
        """Remove the job (nothing is due any more)."""
        self._at = None
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(JOB_ID)

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        self._at = None

    def schedule(self, deadline: float | None) -> None:
        """Make sure the job runs no later than ``deadline`` (event-time seconds).

        A job already set for an earlier instant is kept: waking early costs one
        ``advance`` that fires nothing and sets the job again, while moving the
        job on every batch (deadlines such as ``missing.after`` move later with
        every sample) would cost an APScheduler update per batch.
        """
        if deadline is None or (self._at is not None and deadline >= self._at):
            return
        trigger = DateTrigger(run_date=datetime.fromtimestamp(deadline, UTC))
        # misfire_grace_time=None: a job that comes up late (a busy machine, a long batch)
        # still runs. APScheduler's default would skip it after 1s and, since _at stays
        # set, no later deadline would ever be scheduled again.
        self._scheduler.add_job(self._run, trigger, id=JOB_ID, args=[deadline],
                                replace_existing=True, misfire_grace_time=None,
                                coalesce=True)
        self._at = deadline

    async def _run(self, deadline: float) -> None:
        self._at = None  # a date job runs once; on_due schedules the next deadline
        # A timer may wake a hair early: the deadline itself is the instant being evaluated.
        now = max(self._clock(), deadline)
        try:
            self._on_due(now)
        except Exception:  # a bug in one run must not stop all future timers
            log.exception("timer run at %.3f failed", deadline)
