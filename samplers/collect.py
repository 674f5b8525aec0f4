"""Stack samples off the bus: a rolling window per source, or one source for N seconds.

Shared by ``flarebus flamegraph`` (collect the next N seconds) and the
``flamegraph`` action (keep the last N seconds of every source, so an alert can
come with the flamegraph of what led up to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from flarebus.events import decode_stacks
from flarebus.samplers.aggregate import Frame, WindowStore, build

log = logging.getLogger("flarebus.samplers")


class StackWindows:
    """Subscribes to ``<prefix>.>`` (or one source) and keeps a RollingWindow per source."""

    def __init__(self, nc: Client, *, span: float, prefix: str = "stacks",
                 source: str | None = None, max_samples: int = 100_000) -> None:
        self.nc = nc
        self.subject = f"{prefix}.{source}" if source else f"{prefix}.>"
        self.store = WindowStore(span, max_samples=max_samples)
        self.invalid = 0
        self.received = 0
        self._sub: Subscription | None = None
        self._arrived = asyncio.Event()

    async def start(self) -> StackWindows:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
        await self.nc.flush()
        return self

    async def _on_msg(self, msg: Msg) -> None:
        try:
            samples = decode_stacks(msg.data)
        except (msgspec.DecodeError, ValueError) as exc:
            self.invalid += 1
            log.debug("ignoring invalid stack message on %s: %s", msg.subject, exc)
            return
        now = time.time()
        for sample in samples:
            self.store.add(sample, now=now)
            self.received += 1
        self._arrived.set()

    def tree(self, source: str, seconds: float, *, now: float | None = None) -> Frame:
        """The flamegraph of ``source`` over ``(now - seconds, now]`` (wall clock by default)."""
        window = self.store.get(source)
        if window is None:
            return Frame()
        return window.tree(seconds, now=time.time() if now is None else now)

    def unit(self, source: str) -> str:
        window = self.store.get(source)
        return window.unit if window is not None else "samples"

    async def wait_for_any(self, timeout: float) -> bool:
        """Wait until a new sample arrives (True) or ``timeout`` passes (False)."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def settle(self) -> None:
        """Take in every message the server sent until now: a flush, then our queue run dry."""
        await self.nc.flush()
        while self._sub is not None and self._sub.pending_msgs:
            await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception as exc:  # a closed connection has nothing left to unsubscribe
                log.debug("unsubscribe %s: %s", self.subject, exc)


async def record(nc: Client, source: str, seconds: float, *, prefix: str = "stacks",
                 stop: asyncio.Event | None = None,
                 on_started: Callable[[], None] = lambda: None) -> tuple[Frame, str, int]:
    """Collect ``source``'s stacks arriving in the next ``seconds``: (tree, unit, samples).

    ``stop`` ends the recording early with what arrived so far: whoever records
    a run of unknown length (a benchmark, Ctrl-C at a terminal) still gets its graph.
    ``on_started`` runs once the subscription is in place (nothing is missed after it).
    """
    windows = await StackWindows(nc, span=seconds + 60, prefix=prefix, source=source).start()
    on_started()
    try:
        if stop is None:
            await asyncio.sleep(seconds)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
        await windows.settle()  # what was sent before the end belongs to the recording
    finally:
        await windows.stop()
    window = windows.store.get(source)
    samples = window.samples(float("inf")) if window is not None else []
    return build(samples), windows.unit(source), len(samples)
