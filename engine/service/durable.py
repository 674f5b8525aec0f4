"""Durable ingest: the samples stream read in order, resumed from the last checkpoint.

In ``engine.ingest.mode: durable`` a JetStream stream (``engine.ingest.stream``,
bounded by ``max_age`` and ``max_bytes``) captures ``metrics.>`` and ``stacks.>``:
publishers change nothing (a plain NATS publish lands in it). The engine reads
the stream through one ordered consumer covering both prefixes, so samples are
evaluated in the order the server stored them, metrics and stacks interleaved
as they came.

Ack policy: the consumer acks nothing (nats-py's ordered consumer: no
redelivery to reorder anything, flow control instead of pending limits, and a
reset at the next sequence after a gap, a disconnect or a lost consumer).
What a durable consumer's ack floor would hold is kept by the engine itself:
the stream sequence of the last message applied before a checkpoint's state was
taken is written to ``meta.ingest.<i>-of-<N>`` in the state bucket *after* that
state, in the same round. A restart (or another engine taking the shard over)
restores the state and resumes right after that sequence, so every sample is
applied to the restored state exactly once. A pull consumer acked after the
checkpoint was tried on paper and dropped: messages of a fetch lost in a
disconnect come back only after ``ack_wait``, behind newer ones, and the
evaluator would then drop them as out of order.

Event time after a stall or a restart: the deadline timer runs on the wall
clock, and after a stall it is overdue before the backlog is read. While the
engine may be behind (the last batch said more is pending, or a stall or start
happened and the stream has not been seen caught up since), ``behind()`` holds
the timer; the backlog's samples run every deadline before them in event time,
so a series pending before the stall and crossing in the backlog fires at
``ts + for``, as it would have without the stall.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from flarebus.bus import ensure_samples_stream
from flarebus.config import JetStreamSettings
from flarebus.engine.service.decoding import decode_metric_batch, decode_stack_batch
from flarebus.engine.service.ingest import Inbox, Ingest
from flarebus.engine.service.stall import StallWatch
from flarebus.errors import describe
from flarebus.ingest_settings import IngestSettings

log = logging.getLogger("flarebus.engine.durable")

POSITION_PREFIX = "ingest."


class Position(msgspec.Struct):
    """Where the engine's checkpointed state ends in the samples stream."""

    stream: str
    seq: int


position_decoder = msgspec.json.Decoder(Position)
position_encoder = msgspec.json.Encoder()


def position_key(shard_index: int, shard_count: int) -> str:
    """The position's key under ``meta.`` in the state bucket."""
    return f"{POSITION_PREFIX}{shard_index}-of-{shard_count}"


async def read_position(kv: KeyValue, key: str, stream: str) -> int | None:
    """The last checkpointed stream sequence, None when there is none (or another stream's)."""
    try:
        entry = await kv.get(key)
    except NotFoundError:
        return None
    if not entry.value:
        return None
    try:
        position = position_decoder.decode(entry.value)
    except msgspec.DecodeError:
        return None
    return position.seq if position.stream == stream else None


class DurableIngest(Ingest):
    """Ingest from the samples stream: one ordered consumer, batches in stream order."""

    def __init__(self, nc: Client, js: JetStreamContext, *args: Any,
                 settings: IngestSettings, after: int | None, watch: StallWatch,
                 replication: JetStreamSettings | None = None, **kwargs: Any) -> None:
        super().__init__(nc, *args, **kwargs)
        self._js = js
        self._settings = settings
        self._replication = replication  # jetstream: replicas, as for every stream
        self._after = after
        self._watch = watch
        self._inbox = Inbox(settings.batch)
        self.applied = after or 0  # stream sequence of the last message handed on
        self._pending = 0  # what the last batch said was still in the stream after it
        self._checked = -1  # stalls() when the stream was last seen caught up; -1: never
        self._checking: asyncio.Task[None] | None = None

    def subjects(self) -> list[str]:
        """What this engine reads (the seam for partitioned ingest)."""
        return [f"{self._metrics_prefix}.>", f"{self._stacks_prefix}.>"]

    async def start(self, metrics: Sequence[str] | None = None,
                    stacks: Sequence[str] | None = None) -> None:
        """One ordered consumer on the samples stream (durable ingest reads every subject:
        it runs as the one engine or a static shard, never coordinated)."""
        settings = self._settings
        await ensure_samples_stream(self._js, settings, self.subjects(), self._replication)
        if self._after is None:  # a first start: from now on, not the stream's whole history
            config = ConsumerConfig(filter_subjects=self.subjects(),
                                    deliver_policy=DeliverPolicy.NEW)
        else:
            await self._count_expired(self._after)
            config = ConsumerConfig(filter_subjects=self.subjects(),
                                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                    opt_start_seq=self._after + 1)
        sub = await self._js.subscribe(
            self.subjects()[0], cb=self._inbox.put, stream=settings.stream, config=config,
            ordered_consumer=True, pending_msgs_limit=0, pending_bytes_limit=0)
        self._by_subject[settings.stream] = sub
        log.info("durable ingest from stream %s (%s), %s", settings.stream,
                 ", ".join(self.subjects()),
                 "from now on" if self._after is None else f"after sequence {self._after}")

    async def _count_expired(self, after: int) -> None:
        """Samples the stream's limits removed before this engine read them: lost, said so."""
        info = await self._js.stream_info(self._settings.stream)
        expired = info.state.first_seq - (after + 1)
        if expired > 0:
            self._stats.drop("expired", expired)
            log.error("INPUT LOST: %d samples left the stream %s (engine.ingest.max_age / "
                      "max_bytes) before the engine read them; resuming at sequence %d",
                      expired, self._settings.stream, info.state.first_seq)

    async def run(self) -> None:
        metrics_dot = self._metrics_prefix + "."
        metrics_len, stacks_len = len(metrics_dot), len(self._stacks_prefix) + 1
        while msgs := await self._inbox.take():
            start = 0
            for i in range(1, len(msgs) + 1):  # runs of one kind, in stream order
                if i == len(msgs) or msgs[i].subject.startswith(metrics_dot) != \
                        msgs[start].subject.startswith(metrics_dot):
                    await self._handle_run(msgs[start:i], metrics_dot, metrics_len, stacks_len)
                    meta = msgs[i - 1].metadata  # one reply subject parsed per run
                    self.applied, self._pending = meta.sequence.stream, meta.num_pending
                    start = i

    async def _handle_run(self, msgs: list[Msg], metrics_dot: str, metrics_len: int,
                          stacks_len: int) -> None:
        traced = self._traced()
        if msgs[0].subject.startswith(metrics_dot):
            decoded: Any = decode_metric_batch(msgs, metrics_len, traced=traced,
                                               limits=self._limits)
            handle: Callable[[Any], None] = self._on_metrics
        else:
            decoded = decode_stack_batch(msgs, stacks_len, traced=traced, limits=self._limits)
            handle = self._on_stacks
        await self._account(len(msgs), decoded)
        if decoded.segments:
            handle(decoded.segments)

    async def stop(self) -> None:
        await super().stop()
        self._inbox.close()
        if self._checking is not None:
            self._checking.cancel()

    def behind(self) -> bool:
        """True while deadlines must wait for the backlog (see the module docstring)."""
        if self._pending > 0:
            return True
        self._watch.observe()  # a stall that just ended, before the watch's own tick saw it
        stalls = self._watch.stalls
        if self._checked == stalls:
            return False
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._check_caught_up(stalls))
        return True

    async def _check_caught_up(self, stalls: int) -> None:
        """Compare what was applied with the stream's end; caught up: stop holding deadlines."""
        try:
            info = await self._js.stream_info(self._settings.stream)
        except Exception as exc:  # the server is away: hold on, the next timer run asks again
            log.debug("stream info: %s", describe(exc))
            return
        if (self.applied or 0) >= info.state.last_seq and not self._inbox.waiting:
            self._checked = stalls

    def on_disconnect(self, stalled: float | None) -> None:
        """Nothing is lost: the stream kept it; the ordered consumer resumes where it was."""
        log.warning("disconnected from NATS%s; durable ingest resumes after stream sequence %d "
                    "(nothing published meanwhile is lost)",
                    f" after a {stalled:.1f}s stall" if stalled is not None else "", self.applied)
        if stalled is not None:
            self._checked = -1
