"""What each worker's gate did, for ``flarebus status``: the KV bucket ``FLAREBUS_WORKERS``.

Engines report in their state bucket; workers had nothing to report until the
gate, whose drops (silenced, inhibited, rate-limited) an operator must be able
to see without tailing. Each worker writes one small summary (key: host and
pid) every ``REPORT_EVERY`` while its counts change, and at least every
``REFRESH``; the bucket's TTL removes the summary of a worker that stopped.
The summary is bounded (``TOP`` rate-limited pairs), whatever the rule count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sized

import msgspec
from nats.js import JetStreamContext
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from flarebus import jetstream
from flarebus.config import JetStreamSettings

log = logging.getLogger("flarebus.worker")

WORKERS_BUCKET = "FLAREBUS_WORKERS"
REPORT_EVERY = 1.0
REFRESH = 30.0
TTL = 120.0
TOP = 20


class LimitedAction(msgspec.Struct):
    """One (rule, action) pair whose triggers the rate limit dropped."""

    rule: str
    action: str
    dropped: int


class WorkerSummary(msgspec.Struct):
    """One worker's gate counts since it started."""

    host: str
    pid: int
    started_at: float
    updated_at: float
    suppressed: dict[str, int]  # verdict -> triggers (silenced, inhibited) or actions
    rate_limited: list[LimitedAction]  # the TOP pairs, most dropped first
    silences: int  # silences this worker knows (any state)


summary_decoder = msgspec.json.Decoder(WorkerSummary)
_encoder = msgspec.json.Encoder()


async def workers_bucket(js: JetStreamContext,
                         settings: JetStreamSettings | None = None) -> KeyValue:
    return await jetstream.bucket(js, settings, WORKERS_BUCKET, ttl=TTL,
                                  storage=StorageType.MEMORY,
                                  description="flarebus worker summaries (flarebus status)")


class Reporter:
    """Writes a worker's summary while it runs."""

    def __init__(self, counts: Counter[str], dropped: Counter[tuple[str, str]],
                 silences: Sized, chores: Callable[[], Awaitable[None]]) -> None:
        self.counts = counts
        #: run every round too: the gate's clean-up of expired silences and old resolutions
        self.chores = chores
        self.dropped = dropped
        self.silences = silences
        self.key = f"{socket.gethostname()}-{os.getpid()}".replace(".", "_")
        self.started_at = time.time()
        self._task: asyncio.Task[None] | None = None

    def summary(self) -> WorkerSummary:
        top = [LimitedAction(rule, action, n)
               for (rule, action), n in self.dropped.most_common(TOP)]
        return WorkerSummary(socket.gethostname(), os.getpid(), self.started_at, time.time(),
                             dict(self.counts), top, len(self.silences))

    async def start(self, js: JetStreamContext,
                    settings: JetStreamSettings | None = None) -> None:
        kv = await workers_bucket(js, settings)
        self._task = asyncio.create_task(self._report(kv))

    async def _report(self, kv: KeyValue) -> None:
        last: tuple[object, ...] | None = None
        written = 0.0
        while True:
            state = (tuple(self.counts.items()), len(self.silences))
            if state != last or time.monotonic() - written > REFRESH:
                try:
                    await kv.put(self.key, _encoder.encode(self.summary()))
                    last, written = state, time.monotonic()
                except Exception as exc:  # disconnected: the next round tries again
                    log.debug("worker summary not written: %s", exc)
            try:
                await self.chores()
            except Exception as exc:  # clean-up is best effort; the next round tries again
                log.debug("gate housekeeping failed: %s", exc)
            await asyncio.sleep(REPORT_EVERY)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
