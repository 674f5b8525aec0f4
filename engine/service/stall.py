"""Did the engine's event loop stall? The one sign of a server-side slow-consumer disconnect.

A nats-server disconnects a client that does not read its socket for the
server's ``write_deadline`` (10 s by default): a SIGSTOP, a long GC pause, a
CPU-starved container, a debugger. The client only sees the socket close
("unexpected EOF", "connection reset by peer"), exactly as when a server
restarts, and core NATS does not keep what it could not deliver, so the
input of that stall is lost. The watch tells the two apart: a task that
wakes every ``tick`` seconds notices when it woke far too late, and a
disconnect during or shortly after such a stall is reported as a slow
consumer, loudly, as lost input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class StallWatch:
    """Notices event-loop stalls longer than ``threshold`` seconds."""

    def __init__(self, *, tick: float = 0.25, threshold: float = 2.0, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tick = tick
        self._threshold = threshold
        self._window = window
        self._clock = clock
        self._last_tick = clock()
        self._stall_seconds = 0.0
        self._stall_ended = -float("inf")
        self.stalls = 0
        self.longest = 0.0

    async def run(self) -> None:
        """Tick until cancelled, remembering the last stall."""
        while True:
            await asyncio.sleep(self._tick)
            self.observe()

    def observe(self) -> None:
        """One tick: a gap much longer than ``tick`` was a stall."""
        now = self._clock()
        gap = now - self._last_tick - self._tick
        self._last_tick = now
        if gap >= self._threshold:
            self.stalls += 1
            self.longest = max(self.longest, gap)
            self._stall_seconds, self._stall_ended = gap, now

    def recent(self) -> float | None:
        """Seconds of the stall going on now or ended within ``window`` s; None if none."""
        now = self._clock()
        current = now - self._last_tick - self._tick
        if current >= self._threshold:  # the loop runs again, the tick has not yet
            return current
        if now - self._stall_ended <= self._window:
            return self._stall_seconds
        return None
