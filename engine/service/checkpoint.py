"""Evaluator state in the JetStream KV bucket: incremental checkpoints and restore.

Only what changed since the last checkpoint is written (``Evaluator.take_dirty``),
so the cost of a checkpoint follows the rate of state changes, not the number
of series; writes go out as asynchronous KV puts with a bounded number in
flight. A checkpoint is written only after every trigger submitted before it
was acknowledged by the stream: stored state never claims "firing" for a
trigger that could still be lost. A kill -9 therefore loses at most the
pending progress since the last checkpoint, and whatever it re-fires carries
the same deterministic id, which the stream's duplicate window drops.

KV keys: ``state.<evaluator state key>`` for series state, ``meta.<name>`` for
the engine's summary (read by ``flarebus status``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from flarebus.engine.service.inflight import ConnectionLost, InFlight
from flarebus.engine.service.metrics import EngineStats
from flarebus.engine.service.trigger_publisher import TriggerPublisher
from flarebus.errors import describe
from flarebus.kv import KV_OPERATION, META_PREFIX, STATE_PREFIX, read_entries
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.checkpoint")



class Checkpointer:
    """Writes the evaluator's dirty state to KV, only once its triggers are acknowledged."""

    def __init__(self, js: JetStreamContext, kv: KeyValue,
                 take_dirty: Callable[[], dict[str, bytes | None]],
                 publisher: TriggerPublisher, stats: EngineStats, *,
                 max_in_flight: int = 512, ack_timeout: float = 5.0,
                 inflight: InFlight | None = None,
                 may_write: Callable[[str], bool | None] | None = None) -> None:
        self._js = js
        self._inflight = inflight or InFlight()
        #: the fence of a coordinated engine: True write the state key now, None not
        #: now (its lease is not confirmed), False never (its partition is gone)
        self._may_write = may_write
        self._bucket = kv._name
        self._take_dirty = take_dirty
        self._publisher = publisher
        self._stats = stats
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout
        self._unsaved: dict[str, bytes | None] = {}
        self._lock = asyncio.Lock()
        self._ratelog = RateLimitedLog(log, 30.0)

    def subject(self, key: str) -> str:
        return f"$KV.{self._bucket}.{key}"

    @property
    def unsaved(self) -> int:
        return len(self._unsaved)

    async def checkpoint(self, *, publish_timeout: float | None = None) -> int:
        """Write what changed since the last checkpoint; returns the number of keys written.

        Keys whose write fails stay queued for the next checkpoint (a newer value wins).
        """
        async with self._lock:
            dirty = self._take_dirty()
            mark = self._publisher.submitted
            self._unsaved.update(dirty)
            self._stats.checkpoints += 1  # a round, whether or not anything had changed
            if not self._unsaved:
                return 0
            if not await self._publisher.wait_acked(mark, publish_timeout):
                log.warning("checkpoint postponed: %d triggers still unacknowledged",
                            self._publisher.backlog)
                return 0
            if self._may_write is not None:
                for key in [k for k in self._unsaved if self._may_write(k) is False]:
                    del self._unsaved[key]
            batch = dict(self._unsaved)
            written = await self._write({STATE_PREFIX + k: v for k, v in batch.items()})
            for key, value in batch.items():
                if (STATE_PREFIX + key) in written and self._unsaved.get(key, value) is value:
                    self._unsaved.pop(key, None)
            self._stats.checkpoint_keys_written += len(written)
            if len(written) < len(batch):
                self._ratelog.log(logging.WARNING, "partial",
                                  f"checkpoint wrote {len(written)} of {len(batch)} keys; "
                                  "the rest is retried at the next checkpoint")
            return len(written)

    async def put_meta(self, name: str, value: bytes) -> bool:
        written = await self._write({META_PREFIX + name: value})
        return bool(written)

    async def _write(self, entries: Mapping[str, bytes | None]) -> set[str]:
        """Put (or delete, for None) every entry with at most ``max_in_flight`` unacked."""
        written: set[str] = set()
        items = iter(entries.items())

        async def writer() -> None:
            for key, value in items:
                if (self._may_write is not None and key.startswith(STATE_PREFIX)
                        and self._may_write(key[len(STATE_PREFIX):]) is not True):
                    continue  # checked as it is sent: the lease may have gone meanwhile
                if await self._put(key, value):
                    written.add(key)

        workers = min(self._max_in_flight, len(entries))
        await asyncio.gather(*(writer() for _ in range(workers)))
        return written

    async def _put(self, key: str, value: bytes | None, tries: int = 3) -> bool:
        """One KV put (or delete), sent again when a disconnect lost its ack; True once acked."""
        for _ in range(tries):
            try:
                if value is None:
                    future = await self._js.publish_async(
                        self.subject(key), b"", headers={KV_OPERATION: "DEL"})
                else:
                    future = await self._js.publish_async(self.subject(key), value)
                await self._inflight.ack(future, self._ack_timeout)
                return True
            except asyncio.CancelledError:
                raise
            except ConnectionLost:
                continue
            except Exception as exc:
                self._ratelog.log(logging.WARNING, "write",
                                  f"checkpoint write of {key} failed: {describe(exc)}")
                return False
        self._ratelog.log(logging.WARNING, "write",
                          f"checkpoint write of {key} failed: the connection was lost "
                          f"{tries} times before an acknowledgement")
        return False


__all__ = ["KV_OPERATION", "META_PREFIX", "STATE_PREFIX", "Checkpointer", "read_entries"]
