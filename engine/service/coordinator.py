"""Engines that share the partitions: register, claim a fair share, beat, hand over, take over.

Every engine runs the same loop against the lease bucket (see ``leases``):

- **beat** (every ``ttl / BEATS``): rewrite its registry key and, with
  compare-and-set on the revision it last wrote, every lease it holds; each
  success extends the fence; a failed CAS means another engine holds the
  partition now: it is dropped at once, without touching its state.
- **balance** (every ``interval``): with L live engines the fair share is
  ceil(P / L). Above it, an engine hands partitions over (stop reading them,
  flush their triggers, checkpoint, revoke from the fence, delete the lease);
  below it, it claims free partitions (``create``). A joining engine is below
  its share, the others above: that is the rebalance. An engine that died stops
  beating: its registry key and leases expire after the TTL and the others'
  next balance claims them (a takeover within TTL + interval + restore).

The engine-side work of gaining and dropping a partition is in ``handover``;
this module only decides and keeps the leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from flarebus.engine.service.checkpoint import read_entries
from flarebus.engine.service.leases import (
    BEATS,
    ENGINE_KEY,
    FENCE_SHARE,
    PARTITION_KEY,
    EngineInfo,
    Fence,
    Lease,
    info_decoder,
    known_dead,
    lease_decoder,
    lease_encoder,
    partition_key,
    process_space,
)
from flarebus.errors import describe
from flarebus.kv import lost_race
from flarebus.partitions import PARTITIONS, ranges
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.coordinator")

Parts = list[int]
Hook = Callable[[Parts], Awaitable[None]]


class Coordinator:
    """One engine's side of the shared partitions; ``on_*`` hooks do the engine's part."""

    def __init__(self, kv: KeyValue, engine_id: str, info: Callable[[], EngineInfo], *,
                 ttl: float, on_gain: Hook, on_prepare: Hook, on_drop: Hook,
                 partitions: int = PARTITIONS, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kv = kv
        self.engine_id = engine_id
        self.ttl = ttl
        self.partitions = partitions
        self.interval = interval if interval is not None else min(1.0, ttl / BEATS)
        self.fence = Fence(clock)
        self._clock = clock
        self._info = info
        self._on_gain, self._on_prepare, self._on_drop = on_gain, on_prepare, on_drop
        self._revisions: dict[int, int] = {}
        self._epochs: dict[int, int] = {}  # the revision each lease was taken at
        self._sent: dict[int, float] = {}  # when the last successful write of it was sent
        self._lock = asyncio.Lock()  # one balance or hand-over at a time
        self._tasks: list[asyncio.Task[None]] = []
        self._beating = self._balancing = False
        self.space = process_space()  # in the registry: see known_dead
        self._ratelog = RateLimitedLog(log, 10.0)
        self.live: list[str] = []
        self.takeovers = 0

    @property
    def held(self) -> list[int]:
        return sorted(self.fence.held)

    async def start(self) -> None:
        """Register and claim a first share, then keep beating and balancing in the background."""
        await self.kv.put(f"{ENGINE_KEY}{self.engine_id}", self._info_bytes())
        await self.balance()
        self._beating = self._balancing = True
        self._tasks = [
            asyncio.create_task(self._every(self.ttl / BEATS, self.beat,
                                            lambda: self._beating), name="beat"),
            asyncio.create_task(self._every(self.interval, self.balance,
                                            lambda: self._balancing), name="balance")]

    async def stop(self) -> None:
        """Hand every partition over at once (SIGTERM), then leave the registry.

        The beats go on during the hand-over: its flush must not find the leases lapsed.
        """
        beat, others = (self._tasks[0], self._tasks[1:]) if self._tasks else (None, [])
        self._balancing = False
        await _cancel(others)
        async with self._lock:
            await self._hand_over(self.held)
        self._beating = False
        await _cancel([beat] if beat is not None else [])
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.kv.delete(f"{ENGINE_KEY}{self.engine_id}")

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]],
                     running: Callable[[], bool]) -> None:
        while running():  # not only cancelled: a cancel that wait_for swallowed must end it too
            await asyncio.sleep(seconds)
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus may be away: the next round retries
                self._ratelog.log(logging.WARNING, step.__name__,
                                  f"coordination {step.__name__} failed: {describe(exc)}")

    # ------------------------------------------------------------------ beat

    async def beat(self) -> None:
        """Rewrite the registry key and every held lease (CAS); drop the ones another took."""
        await self.kv.put(f"{ENGINE_KEY}{self.engine_id}", self._info_bytes())
        parts = self.held  # also those being restored or handed over: they are still held
        results = await asyncio.gather(*(self._renew(p) for p in parts))
        lost = [p for p, ok in zip(parts, results, strict=True)
                if ok is False and self.fence.holds(p)]
        expired = [p for p in self.held if self._clock() > self._sent.get(p, 0) + self.ttl]
        if lost or expired:
            gone = sorted(set(lost) | set(expired))
            log.warning("lost the lease of %d partitions %s (another engine holds them, or "
                        "it could not be renewed within the TTL): dropping them without "
                        "publishing; samples published to them until an engine claims them "
                        "again are not received (core ingest)", len(gone), ranges(gone))
            await self._drop(gone)

    async def _renew(self, partition: int) -> bool | None:
        """True renewed; False another engine holds it; None not known (the bus is away)."""
        sent = self._clock()
        try:
            revision = await self.kv.update(
                partition_key(partition), self._lease_bytes(partition),
                last=self._revisions[partition])
        except KeyWrongLastSequenceError:
            return await self._own_write(partition)
        except Exception as exc:
            self._ratelog.log(logging.WARNING, "renew", f"lease renewal failed: {describe(exc)}")
            return None
        if not self.fence.holds(partition):
            return None  # handed over meanwhile
        self._revisions[partition] = revision
        self._sent[partition] = sent
        self.fence.grant(partition, sent + FENCE_SHARE * self.ttl)
        return True

    async def _own_write(self, partition: int) -> bool | None:
        """A CAS failed: another engine's lease (False), or a write of ours whose answer was
        lost (a timeout under load): then adopt its revision, without extending the fence."""
        try:
            entry = await self.kv.get(partition_key(partition))
        except (KeyNotFoundError, KeyDeletedError):
            return False  # expired or released: not ours any more
        except Exception:
            return None  # the bus is away: the next beat asks again
        try:
            lease = lease_decoder.decode(entry.value or b"")
        except msgspec.DecodeError:
            return False  # not a lease flarebus wrote
        if lease.engine != self.engine_id or lease.epoch != self._epochs.get(partition):
            return False
        if entry.revision is not None:
            self._revisions[partition] = entry.revision
        return None

    # --------------------------------------------------------------- balance

    async def balance(self) -> None:
        """Claim free partitions up to the fair share; hand over what is above it."""
        async with self._lock:
            entries = await read_entries(self.kv, prefix="", timeout=self.ttl)
            await self._evict_dead(entries)
            self.live = sorted({k[len(ENGINE_KEY):] for k in entries if k.startswith(ENGINE_KEY)}
                               | {self.engine_id})
            fair = math.ceil(self.partitions / len(self.live))
            held = self.held
            if len(held) > fair:
                await self._hand_over(held[fair:])
                return
            free = [p for p in range(self.partitions)
                    if partition_key(p) not in entries and not self.fence.holds(p)]
            random.shuffle(free)  # engines starting together do not all race for the same ones
            wanted = fair - len(held)
            if wanted > 0 and free:
                await self._claim(free, wanted)

    async def _evict_dead(self, entries: dict[str, bytes]) -> None:
        """Delete the keys of engines known to be dead (``known_dead``: a restart on the
        same machine), so their partitions are free now, not after the TTL; ``entries``
        loses them too. Each delete is a CAS on the revision just read: never a live lease."""
        dead = set()
        for key, value in entries.items():
            if key.startswith(ENGINE_KEY):
                with contextlib.suppress(msgspec.DecodeError):
                    if known_dead(info_decoder.decode(value), self.space):
                        dead.add(key[len(ENGINE_KEY):])
        if not dead:
            return
        leases = [k for k, v in entries.items()
                  if k.startswith(PARTITION_KEY) and _holder(v) in dead]
        for key in leases + [f"{ENGINE_KEY}{engine}" for engine in sorted(dead)]:
            try:
                entry = await self.kv.get(key)
                if key.startswith(PARTITION_KEY) and _holder(entry.value or b"") not in dead:
                    continue  # taken meanwhile
                await self.kv.delete(key, last=entry.revision)
            except Exception as exc:  # gone already, or rewritten: it expires or is live
                log.debug("evicting %s: %s", key, describe(exc))
                continue
            del entries[key]
        log.info("engines %s are gone (no such process here): their partitions are free",
                 sorted(dead))

    async def _claim(self, free: Parts, wanted: int) -> None:
        claimed: Parts = []
        for partition in free:
            if len(claimed) >= wanted:
                break
            sent = self._clock()
            try:
                revision = await self.kv.create(partition_key(partition),
                                                self._lease_bytes(partition, epoch=0))
            except KeyWrongLastSequenceError:
                continue  # another engine was faster
            self._revisions[partition] = self._epochs[partition] = revision
            self._sent[partition] = sent
            self.fence.grant(partition, sent + FENCE_SHARE * self.ttl)
            claimed.append(partition)
        if claimed:
            log.info("claimed %d partitions (%d live engines): %s", len(claimed),
                     len(self.live), ranges(claimed))
            await self._on_gain(sorted(claimed))
            self.takeovers += 1

    async def _hand_over(self, parts: Parts) -> None:
        """Graceful: flush and checkpoint while still held, revoke, then release the leases."""
        if not parts:
            return
        await self._on_prepare(parts)
        await self._drop(parts)
        for partition in parts:
            await self._release(partition)
        log.info("handed over %d partitions: %s", len(parts), ranges(parts))

    async def _release(self, partition: int) -> None:
        """Delete our lease of ``partition`` (CAS: never another engine's), at once for others."""
        key = partition_key(partition)
        for _ in range(3):  # a beat may have rewritten it meanwhile: its revision, then again
            try:
                await self.kv.delete(key, last=self._revisions.get(partition))
                break
            except Exception as exc:
                if not isinstance(exc, KeyWrongLastSequenceError) and not lost_race(exc):
                    # the bus is away: the lease expires after the TTL
                    log.warning("could not release partition %d: %s", partition, describe(exc))
                    break
                if await self._own_write(partition) is False:
                    break  # not ours any more (taken over while this engine was away)
        self._revisions.pop(partition, None)
        self._epochs.pop(partition, None)

    async def _drop(self, parts: Parts) -> None:
        parts = [p for p in parts if self.fence.holds(p)]  # once only, whoever came first
        if not parts:
            return
        self.fence.revoke(parts)
        for partition in parts:
            self._sent.pop(partition, None)
        await self._on_drop(parts)

    # ---------------------------------------------------------------- values

    def _lease_bytes(self, partition: int, epoch: int | None = None) -> bytes:
        epoch = self._epochs.get(partition, 0) if epoch is None else epoch
        return lease_encoder.encode(Lease(engine=self.engine_id, epoch=epoch))

    def _info_bytes(self) -> bytes:
        return lease_encoder.encode(self._info())


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait; again while one is still running (nats-py's wait_for can swallow it)."""
    while tasks:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=1.0)
        tasks = [t for t in tasks if not t.done()]


def _holder(value: bytes) -> str | None:
    try:
        return lease_decoder.decode(value).engine
    except msgspec.DecodeError:
        return None


def holders(entries: dict[str, bytes]) -> dict[int, str]:
    """partition -> engine id, from the lease bucket's entries (``flarebus status``)."""
    out: dict[int, str] = {}
    for key, value in entries.items():
        if key.startswith("p."):
            with contextlib.suppress(Exception):
                out[int(key[2:])] = lease_decoder.decode(value).engine
    return out


async def registry(kv: KeyValue) -> tuple[list[EngineInfo], dict[int, str]]:
    """The live engines (as they last described themselves) and who holds each partition."""
    entries = await read_entries(kv, prefix="")
    engines = []
    for key, value in entries.items():
        if key.startswith(ENGINE_KEY):
            with contextlib.suppress(Exception):
                engines.append(info_decoder.decode(value))
    return sorted(engines, key=lambda e: e.id), holders(entries)
