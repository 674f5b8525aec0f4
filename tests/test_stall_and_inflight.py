"""The two pieces behind slow-consumer detection and write recovery, on their own."""

from __future__ import annotations

import asyncio

import pytest

from flarebus.engine.service.inflight import ConnectionLost, InFlight
from flarebus.engine.service.stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tick(watch: StallWatch, clock: Clock, times: int, every: float = 0.3) -> None:
    """``times`` ticks on time."""
    for _ in range(times):
        clock.now += every
        watch.observe()


class TestStallWatch:
    """A tick that comes far too late is a stall; a disconnect soon after it is a slow consumer."""

    def test_regular_ticks_are_no_stall(self) -> None:
        """Ticks on time: nothing recent."""
        clock = Clock()
        watch = StallWatch(tick=0.25, threshold=2.0, clock=clock)
        tick(watch, clock, 10)
        assert watch.recent() is None and watch.stalls == 0

    def test_a_late_tick_is_remembered_for_the_window(self) -> None:
        """A 15 s gap: counted, reported by recent() for the window, then forgotten."""
        clock = Clock()
        watch = StallWatch(tick=0.25, threshold=2.0, window=60.0, clock=clock)
        clock.now += 15.25
        watch.observe()
        assert watch.stalls == 1 and watch.recent() == pytest.approx(15.0)
        tick(watch, clock, 195)  # 58.5 s on time: still within the window
        assert watch.recent() == pytest.approx(15.0)
        tick(watch, clock, 10)
        assert watch.recent() is None and watch.stalls == 1

    def test_a_stall_not_yet_ticked_is_seen(self) -> None:
        """Asked before the late tick ran (the disconnect callback came first): still a stall."""
        clock = Clock()
        watch = StallWatch(tick=0.25, threshold=2.0, clock=clock)
        clock.now += 20.25
        assert watch.recent() == pytest.approx(20.0)


class TestInFlight:
    """Acks a disconnect lost fail at once with ConnectionLost."""

    async def test_lose_all_fails_pending_acks_only(self) -> None:
        """Two pending acks fail with ConnectionLost; an answered one keeps its result."""
        inflight = InFlight()
        loop = asyncio.get_running_loop()
        done, lost1, lost2 = loop.create_future(), loop.create_future(), loop.create_future()
        waiting = [asyncio.ensure_future(inflight.ack(f, 60)) for f in (done, lost1, lost2)]
        await asyncio.sleep(0)
        done.set_result("ack")
        await asyncio.sleep(0)
        assert inflight.lose_all() == 2
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert results[0] == "ack"
        assert all(isinstance(r, ConnectionLost) for r in results[1:]), results
        assert inflight.lose_all() == 0 and inflight.lost == 2
