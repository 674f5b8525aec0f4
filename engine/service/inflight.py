"""JetStream publishes in flight, failed at once when the connection they went out on is lost.

A publish whose ack was due on a connection that broke never gets that ack:
the server may or may not have stored it, and nats-py leaves its future
waiting until the caller's timeout. The checkpointer's and the trigger
publisher's writes used to sit out that timeout after every reconnect (the
"checkpoint write of meta.engine.0-of-1 failed: TimeoutError" after a slow
consumer disconnect), and the summary went stale meanwhile. The engine calls
``lose_all`` on every disconnect, so each such write fails with
``ConnectionLost`` at once and is sent again (KV puts are last-value-wins,
triggers carry a ``Nats-Msg-Id``: sending again is always safe).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

T = TypeVar("T")


class ConnectionLost(Exception):
    """The connection broke before the server acknowledged the publish: send it again."""

    def __init__(self) -> None:
        super().__init__("the connection to NATS was lost before the server acknowledged it")


class InFlight:
    """The ack futures not resolved yet; ``lose_all`` fails every one of them."""

    def __init__(self) -> None:
        self._futures: set[asyncio.Future[Any]] = set()
        self.lost = 0

    async def ack(self, future: asyncio.Future[T], timeout: float) -> T:
        """Wait for ``future`` (an ack) at most ``timeout`` s; ConnectionLost on a disconnect."""
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return await asyncio.wait_for(future, timeout)

    def lose_all(self) -> int:
        """Fail every pending ack with ConnectionLost; returns how many there were."""
        pending = [f for f in self._futures if not f.done()]
        for future in pending:
            future.set_exception(ConnectionLost())
        self.lost += len(pending)
        return len(pending)
