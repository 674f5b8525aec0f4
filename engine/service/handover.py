"""A coordinated engine's side of a partition: which rules, series and subjects are in it,
and the work of gaining one (restore, subscribe) and giving one up (flush, checkpoint, forget).

What is partitioned is the subject, so the metric name (``flarebus.partitions``):
every series of a metric, and every rule on it, is in the partition of
``metrics.<name>``; a stack rule in that of ``stacks.<source>``. A rule's state
keys (``<rule>.<hash>``) start with its name, so a partition's states are read
back by rule (``read_entries(within="<rule>.")``), not by scanning every key.
A rule over several metrics (wt-expr's ``expr:``) is pinned to the partition of
its first metric; ``routing_subject`` is where that choice lives.

The engine calls ``gain`` / ``prepare`` / ``drop`` from the coordinator's hooks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from flarebus import bus
from flarebus.engine.service.checkpoint import read_entries
from flarebus.engine.service.coordinator import Coordinator
from flarebus.engine.service.leases import EngineInfo, Fence
from flarebus.events import Trigger
from flarebus.partitions import PARTITIONS, partition_of, partition_subject, ranges

if TYPE_CHECKING:
    from flarebus.engine.service.engine import Engine

log = logging.getLogger("flarebus.engine.handover")

#: Up to this many rules, a partition's states are read rule by rule (concurrently).
MAX_RULE_READS = 32
#: The probe metric a starting engine publishes to learn whether the server partitions.
PROBE_METRIC = "flarebus.partition_probe"


def routing_subject(rule: Any, metrics_prefix: str, stacks_prefix: str) -> tuple[str, str]:
    """(prefix, name) whose partition a rule lives in: its metric, first metric, or stack."""
    metric = getattr(rule, "metric", None) or next(iter(getattr(rule, "metrics", None) or ()),
                                                   None)
    if metric is not None:
        return metrics_prefix, metric
    stack = getattr(rule, "stack", None)
    return stacks_prefix, getattr(stack, "source", "") if stack is not None else ""


class Partitioned:
    """Maps rules, series, state keys and triggers to partitions; gains and drops them."""

    def __init__(self, engine: Engine, fence: Fence, kv: KeyValue, *, mapped: bool,
                 partitions: int = PARTITIONS) -> None:
        self.engine = engine
        self.fence = fence
        self.kv = kv
        self.mapped = mapped  # the server puts the partition in the subject
        self.partitions = partitions
        settings = engine.config.engine
        self.metrics_prefix, self.stacks_prefix = settings.metrics_prefix, settings.stacks_prefix
        self.rule_partition: dict[str, int] = {}

    def learn(self, rules: Any) -> None:
        """Remember each rule's partition (a removed rule's stays: its resolutions need it)."""
        for rule in rules.rules:
            prefix, name = routing_subject(rule, self.metrics_prefix, self.stacks_prefix)
            self.rule_partition[rule.name] = partition_of(prefix, name, self.partitions)

    # ---------------------------------------------------------------- mapping

    def of_series(self, key: str) -> int:
        name = key.split("{", 1)[0]
        if name.startswith("stacks."):
            return partition_of(self.stacks_prefix, name[7:], self.partitions)
        return partition_of(self.metrics_prefix, name, self.partitions)

    def owns(self, key: str) -> bool:
        """The evaluator's ``owns``: is this series in a partition this engine holds?"""
        return self.fence.holds(self.of_series(key))

    def may_write(self, state_key: str) -> bool | None:
        """The checkpointer's fence: write now (True), later (None), never (False)."""
        partition = self.rule_partition.get(state_key.split(".", 1)[0])
        if partition is None:
            return True
        if not self.fence.holds(partition):
            return False
        return True if self.fence.valid(partition) else None

    async def may_publish(self, trigger: Trigger) -> bool:
        """The publisher's fence: wait for a confirmed lease; False once the partition is gone."""
        partition = self.rule_partition.get(trigger.rule)
        if partition is None:
            return True
        return await self.fence.wait(partition)

    def subjects(self, parts: Iterable[int]) -> tuple[list[str], list[str]]:
        """What to subscribe to for ``parts``: their partition subjects, or everything unmapped."""
        parts = sorted(parts)
        if not self.mapped:
            everything = bool(parts)
            return ([f"{self.metrics_prefix}.>"] if everything else [],
                    [f"{self.stacks_prefix}.>"] if everything else [])
        return ([partition_subject(self.metrics_prefix, p) for p in parts],
                [partition_subject(self.stacks_prefix, p) for p in parts])

    # ---------------------------------------------------------------- hooks

    async def gain(self, parts: list[int]) -> None:
        """Restore the partitions' checkpointed states, then read their subjects, then catch up."""
        engine = self.engine
        began = time.perf_counter()
        wanted = set(parts)
        rules = [r for r, p in self.rule_partition.items() if p in wanted]
        if len(rules) <= MAX_RULE_READS:  # one consumer per rule: only these partitions' keys
            reads = await asyncio.gather(*(read_entries(self.kv, within=f"{rule}.")
                                           for rule in rules))
            entries = {k: v for read in reads for k, v in read.items()}
        else:  # a consumer each would be too many (the server limits them): one read, filtered
            entries = {k: v for k, v in (await read_entries(self.kv)).items()
                       if self.rule_partition.get(k.split(".", 1)[0]) in wanted}
        engine.evaluator.set_owner(self.owns)
        engine.evaluator.load_state(entries)
        engine.restored_keys += len(entries)  # what `engine ... ready` reports
        engine.restore_seconds += time.perf_counter() - began
        await self.follow()
        engine.on_deadline_now()  # a deadline that passed during the takeover fires now
        log.info("gained partitions %s: %d states restored", ranges(parts), len(entries))

    async def prepare(self, parts: list[int]) -> None:
        """Before a hand-over: stop reading them, publish what is queued, checkpoint."""
        engine = self.engine
        keep = self.fence.held - set(parts)
        assert engine.ingest is not None and engine.publisher is not None
        await engine.ingest.follow(*self.subjects(keep))
        await engine.publisher.flush(engine.shutdown_grace)
        if engine.checkpointer is not None:
            await engine.checkpointer.checkpoint(publish_timeout=0)

    async def drop(self, parts: list[int]) -> None:
        """After the fence was revoked: forget their series (their stored state stays)."""
        gone = set(parts)
        forgotten = self.engine.evaluator.release(lambda key: self.of_series(key) in gone)
        await self.follow()
        log.info("dropped partitions %s: %d series forgotten", ranges(parts), forgotten)

    async def follow(self) -> None:
        assert self.engine.ingest is not None
        await self.engine.ingest.follow(*self.subjects(self.fence.held))


async def server_partitions(nc: Client, metrics_prefix: str, partitions: int = PARTITIONS,
                            timeout: float = 2.0) -> bool:
    """True when the server maps ``<prefix>.>`` to this engine's partition subjects.

    A probe sample of a metric no rule uses goes to ``<prefix>.<probe>``: it
    comes back on the partition subject ``partition_of`` predicts (the server
    partitions, with the same hash and count), or on the plain subject (it does
    not; the engine then reads everything and keeps only its partitions).
    """
    mapped = partition_subject(metrics_prefix, partition_of(metrics_prefix, PROBE_METRIC,
                                                            partitions))
    got: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def on_mapped(_: Any) -> None:
        if not got.done():
            got.set_result(True)

    async def on_plain(_: Any) -> None:
        if not got.done():
            got.set_result(False)

    subs = [await nc.subscribe(mapped.replace(">", PROBE_METRIC), cb=on_mapped),
            await nc.subscribe(f"{metrics_prefix}.{PROBE_METRIC}", cb=on_plain)]
    try:
        await nc.flush()
        await nc.publish(f"{metrics_prefix}.{PROBE_METRIC}",
                         b'{"name": "%s", "value": 0}' % PROBE_METRIC.encode())
        return await asyncio.wait_for(got, timeout)
    except TimeoutError:
        log.warning("the server maps %s.> to partitions other than %d of flarebus's hash: "
                    "reading every subject", metrics_prefix, partitions)
        return False
    finally:
        for sub in subs:
            await sub.unsubscribe()


def engine_id(host: str, pid: int) -> str:
    """A live engine's name in the lease bucket: host and pid, made a KV-key-safe token."""
    import secrets

    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in host)
    return f"{safe}-{pid}-{secrets.token_hex(2)}"


async def coordination(engine: Engine, js: JetStreamContext,
                       state_kv: KeyValue) -> tuple[Coordinator, Partitioned]:
    """The coordinator and partition map of a coordinated engine (started by the engine)."""
    settings = engine.config.engine
    leases = await bus.engine_leases_bucket(js, engine.config.jetstream, ttl=settings.lease_ttl)
    # The fence follows the TTL the server enforces; flarebus.jetstream has already
    # reported and updated a bucket made with another engine.lease_ttl.
    ttl = (await leases.status()).ttl or settings.lease_ttl
    assert engine.nc is not None
    mapped = await server_partitions(engine.nc, settings.metrics_prefix)
    holder: list[Partitioned] = []

    async def gain(parts: list[int]) -> None:
        await holder[0].gain(parts)

    async def prepare(parts: list[int]) -> None:
        await holder[0].prepare(parts)

    async def drop(parts: list[int]) -> None:
        await holder[0].drop(parts)

    coordinator = Coordinator(leases, engine.engine_id, lambda: engine_info(engine),
                              ttl=ttl, on_gain=gain, on_prepare=prepare,
                              on_drop=drop)
    partitioned = Partitioned(engine, coordinator.fence, state_kv, mapped=mapped)
    holder.append(partitioned)
    partitioned.learn(engine.rules)
    log.info("coordinated engine %s: %d partitions, leases of %.1fs, %s", engine.engine_id,
             PARTITIONS, ttl,
             "the server partitions the subjects" if mapped else
             "the server does not partition the subjects: reading all, keeping my partitions")
    return coordinator, partitioned


def engine_info(engine: Engine) -> EngineInfo:
    """This engine in the coordinated engines' registry (``flarebus status``)."""
    counts = engine.evaluator.stats()
    coordinator, partitioned = engine.coordinator, engine.partitioned
    return EngineInfo(id=engine.engine_id, host=socket.gethostname(), pid=os.getpid(),
                      started_at=engine.started_at, updated_at=engine.clock(),
                      partitions=coordinator.held if coordinator is not None else [],
                      series=counts.series, pending=counts.pending, firing=counts.firing,
                      samples_received=engine.stats.samples_received,
                      triggers_published=engine.stats.triggers_published,
                      space=coordinator.space if coordinator else "",
                      subjects="partitioned" if partitioned and partitioned.mapped else "all")
