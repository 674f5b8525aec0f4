"""Following a KV bucket live: every put and delete, from what is stored now onwards.

Silences (flarebus.silences) and the firing alerts inhibition needs
(actions/firing.py) are both a bucket each worker keeps a copy of; nats-py's
watcher delivers the stored entries, a ``None`` marker, then changes as they
happen. This wraps that loop once: callbacks for a put and a delete, and
``start()`` returns once the stored entries are in.

The watch is an ordered push consumer; when the server restarts, nats-py
notices only after missed heartbeats (about 15 s, measured), so the owner
calls ``restart()`` when its connection has reconnected: a fresh watch replays
what is stored, and a key that is gone meanwhile is reported deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

log = logging.getLogger("flarebus.bus")

#: How long ``start()`` waits for the stored entries before going on without them.
READY_WAIT = 10.0


class BucketWatch:
    """Calls ``on_put(key, value)`` and ``on_delete(key)`` for every change of ``kv``."""

    def __init__(self, kv: KeyValue, on_put: Callable[[str, bytes], None],
                 on_delete: Callable[[str], object]) -> None:
        self.kv = kv
        self.on_put = on_put
        self.on_delete = on_delete
        self.ready = asyncio.Event()
        self.keys: set[str] = set()  # what the bucket holds, as far as the watch has said
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        watcher = await self.kv.watchall()
        self.ready.clear()
        self._task = asyncio.create_task(self._follow(watcher))
        with contextlib.suppress(TimeoutError):  # an empty bucket sends its marker at once
            await asyncio.wait_for(self.ready.wait(), READY_WAIT)

    async def restart(self) -> None:
        """A fresh watch (after a reconnect); keys deleted meanwhile are reported deleted."""
        before = set(self.keys)
        await self.close()
        self.keys.clear()
        await self.start()
        for key in before - self.keys:
            self.on_delete(key)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is not None:
                    try:
                        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                            self.keys.discard(entry.key)
                            self.on_delete(entry.key)
                        else:
                            self.keys.add(entry.key)
                            self.on_put(entry.key, entry.value)
                    except Exception:  # one bad entry must not end the watch
                        log.exception("%s: entry %s could not be applied", self.kv._name,
                                      entry.key)
                if entry is None or entry.delta == 0:
                    self.ready.set()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
