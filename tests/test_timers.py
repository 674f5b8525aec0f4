"""The engine's deadline timer (engine/service/timers.py): one wake-up at the next deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from flarebus.engine.service import timers
from flarebus.engine.service.timers import DeadlineTimer


class Runs:
    """Records each on_due(now) and lets a test wait for the next one."""

    def __init__(self, fail_first: bool = False) -> None:
        self.nows: list[float] = []
        self.fail_first = fail_first
        self.event = asyncio.Event()

    def __call__(self, now: float) -> None:
        self.nows.append(now)
        self.event.set()
        if self.fail_first and len(self.nows) == 1:
            raise RuntimeError("a bug in one run")

    async def next(self) -> float:
        await asyncio.wait_for(self.event.wait(), 10)
        self.event.clear()
        return self.nows[-1]


async def test_runs_once_at_the_deadline_never_before_it() -> None:
    """on_due gets a now at or past the deadline; then the timer is free for the next one."""
    runs = Runs()
    timer = DeadlineTimer(runs)
    deadline = time.time() + 0.05
    timer.schedule(deadline)
    assert timer.scheduled_at == deadline
    assert await runs.next() >= deadline
    assert timer.scheduled_at is None and len(runs.nows) == 1


async def test_an_earlier_deadline_moves_the_wakeup_and_a_later_one_does_not() -> None:
    """Only earlier deadlines are news: a later one keeps the wake-up already set."""
    runs = Runs()
    timer = DeadlineTimer(runs)
    now = time.time()
    timer.schedule(now + 3600)
    timer.schedule(now + 0.05)
    timer.schedule(now + 60)
    assert timer.scheduled_at == now + 0.05
    assert await runs.next() >= now + 0.05
    assert timer.scheduled_at is None  # the hour-away wake-up was replaced, not kept
    timer.stop()


async def test_a_deadline_already_past_runs_at_once() -> None:
    """A deadline that came due while no engine ran (or during a long batch) is not skipped."""
    runs = Runs()
    DeadlineTimer(runs).schedule(time.time() - 3600)
    assert await runs.next() >= time.time() - 60


async def test_a_failing_run_does_not_stop_later_timers() -> None:
    """An exception in on_due is logged; the next deadline still runs."""
    runs = Runs(fail_first=True)
    timer = DeadlineTimer(runs)
    timer.schedule(time.time())
    await runs.next()
    timer.schedule(time.time())
    await runs.next()
    assert len(runs.nows) == 2


async def test_the_wall_clock_decides_when_a_deadline_is_reached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Sleeps are capped: a clock behind the deadline (suspend, clock step) keeps it waiting,
    and it runs once the clock reaches it."""
    monkeypatch.setattr(timers, "MAX_SLEEP", 0.01)
    clock = [1000.0]
    runs = Runs()
    timer = DeadlineTimer(runs, clock=lambda: clock[0])
    timer.schedule(1000.5)
    for _ in range(5):  # several capped sleeps pass; the clock has not moved
        await asyncio.sleep(0.02)
    assert runs.nows == [] and timer.scheduled_at == 1000.5
    clock[0] = 1001.0
    assert await runs.next() == 1001.0


async def test_stop_cancels_the_wakeup() -> None:
    """A stopped timer never calls on_due."""
    runs = Runs()
    timer = DeadlineTimer(runs)
    timer.schedule(time.time() + 0.02)
    timer.stop()
    await asyncio.sleep(0.1)
    assert runs.nows == [] and timer.scheduled_at is None
