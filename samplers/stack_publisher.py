"""Publishing StackSamples from a program that has no event loop (``NatsStackPublisher``).

The profiled program must never wait for NATS: the publisher runs its own
thread, event loop and connection; the sampling thread only hands samples
over (``call_soon_threadsafe``), and while the server is unreachable they
queue up to a bound, then the oldest are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from flarebus.config import NatsSettings
from flarebus.events import StackSample

log = logging.getLogger("flarebus.samplers.stack")

MAX_QUEUED = 256


class NatsStackPublisher:
    """A sink that publishes StackSamples from its own thread, event loop and NATS connection."""

    def __init__(self, settings: NatsSettings, *, stacks_prefix: str = "stacks",
                 max_queued: int = MAX_QUEUED) -> None:
        self.settings = settings
        self.stacks_prefix = stacks_prefix
        self.max_queued = max_queued
        self.dropped = 0
        self.published = 0
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[StackSample | None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name="flarebus-stack-publisher")
        self._thread.start()
        self._ready.wait()

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    def __call__(self, sample: StackSample) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, sample)
        except RuntimeError:  # closed: the publisher has stopped
            self.dropped += 1

    def _put(self, sample: StackSample) -> None:
        assert self._queue is not None
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(sample)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue(self.max_queued)
        self._loop.call_soon(self._ready.set)
        self._loop.run_until_complete(self._publish())
        self._loop.close()

    async def _publish(self) -> None:
        from flarebus import bus
        from flarebus.publish import Publisher

        assert self._queue is not None
        nc = None
        try:
            nc = await bus.connect(self.settings, retry_initial=True)
            publisher = Publisher(nc, stacks_prefix=self.stacks_prefix, batch=False)
            while (sample := await self._queue.get()) is not None:
                await publisher.send_stacks(sample)
                self.published += 1
            await publisher.close()
        except Exception:
            log.exception("stack publisher stopped")
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await bus.close(nc)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued, then disconnect (waits up to ``timeout`` seconds)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)  # type: ignore[union-attr]
            self._thread.join(timeout)
