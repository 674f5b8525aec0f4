"""Input: subscribe to ``<metrics_prefix>.>`` and ``<stacks_prefix>.>``, decode in batches.

Throughput comes from never doing per-message work the batch can do once:
the subscription callback only appends the message to an inbox (no task per
message, no decoding); one loop per subscription takes everything that
arrived, decodes each payload with the shared msgspec decoders, hands the
whole batch to the evaluator in one call and bumps the counters once.

Back-pressure is explicit: when the inbox holds ``max_batch`` messages the
callback waits, nats-py's own pending queue fills up to the limits set
deliberately on the subscription, and past those the client drops messages.
nats-py only reports such drops to the error callback, so the engine routes
them here, counts them and logs them loudly (rate-limited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from flarebus.engine.service.decoding import (
    DEFAULT_LIMITS,
    Decoded,
    S,
    Segment,
    decode_metric_batch,
    decode_stack_batch,
)
from flarebus.engine.service.invalid import (
    InvalidSink,
)
from flarebus.engine.service.metrics import EngineStats
from flarebus.events import (
    StackSample,
    WireSample,
)
from flarebus.ingest_settings import InputLimits
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.ingest")


class Inbox:
    """Messages of one subscription, handed over in batches; holds at most ``max_batch``."""

    def __init__(self, max_batch: int) -> None:
        self._max = max_batch
        self._msgs: list[Msg] = []
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closed = False

    async def put(self, msg: Msg) -> None:
        """The subscription callback: append, and wait only when a full batch is waiting."""
        msgs = self._msgs
        msgs.append(msg)
        if len(msgs) == 1:
            self._ready.set()
        elif len(msgs) >= self._max:
            self._space.clear()
            await self._space.wait()

    async def take(self) -> list[Msg]:
        """Everything that arrived (waiting for at least one message); [] once closed and empty."""
        while not self._msgs:
            if self._closed:
                return []
            self._ready.clear()
            await self._ready.wait()
        msgs, self._msgs = self._msgs, []
        self._space.set()
        return msgs

    @property
    def waiting(self) -> bool:
        """Messages are held that were not taken yet."""
        return bool(self._msgs)

    def close(self) -> None:
        self._closed = True
        self._ready.set()
        self._space.set()


#: Samples evaluated before the loop lets other tasks run: 5000 messages of 100 samples
#: are ~2 s of evaluation, long enough to starve a coordinated engine's lease beats.
MAX_SAMPLES_PER_TURN = 20_000


def turns(segments: list[Segment[S]], limit: int) -> Iterator[list[Segment[S]]]:
    """``segments`` cut into runs of at most ``limit`` samples, in order (a long one split)."""
    turn: list[Segment[S]] = []
    size = 0
    for segment in segments:
        samples = segment.samples
        while samples:
            take = samples[:limit - size]
            samples = samples[len(take):]
            turn.append(Segment(take, segment.headers))
            size += len(take)
            if size >= limit:
                yield turn
                turn, size = [], 0
    if turn:
        yield turn


MetricHandler = Callable[[list[Segment[WireSample]]], None]
StackHandler = Callable[[list[Segment[StackSample]]], None]


class Ingest:
    """The engine's two subscriptions and the loops that feed the evaluator from them."""

    #: The stream sequence of the last message handed on (durable ingest); None: no stream.
    applied: int | None = None

    def __init__(self, nc: Client, stats: EngineStats, invalid: InvalidSink, *,
                 on_metrics: MetricHandler, on_stacks: StackHandler,
                 metrics_prefix: str = "metrics", stacks_prefix: str = "stacks",
                 pending_msgs_limit: int = 1_000_000,
                 pending_bytes_limit: int = 512 * 1024 * 1024, max_batch: int = 5000,
                 traced: Callable[[], bool] = lambda: False,
                 limits: InputLimits = DEFAULT_LIMITS) -> None:
        self._nc = nc
        self._limits = limits
        self._stats = stats
        self._invalid = invalid
        self._on_metrics = on_metrics
        self._on_stacks = on_stacks
        self._metrics_prefix = metrics_prefix
        self._stacks_prefix = stacks_prefix
        self._pending_msgs = pending_msgs_limit
        self._pending_bytes = pending_bytes_limit
        self._traced = traced
        self._metrics_inbox = Inbox(max_batch)
        self._stacks_inbox = Inbox(max_batch)
        self._by_subject: dict[str, Subscription] = {}
        self._ratelog = RateLimitedLog(log, 10.0)

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._by_subject.values())

    async def start(self, metrics: Sequence[str] | None = None,
                    stacks: Sequence[str] | None = None) -> None:
        """Subscribe; from here on messages queue up until ``run`` evaluates them.

        ``metrics`` and ``stacks`` are the subjects (default ``<prefix>.>``): a
        coordinated engine passes the partition subjects it holds (see ``follow``).
        """
        await self.follow([f"{self._metrics_prefix}.>"] if metrics is None else metrics,
                          [f"{self._stacks_prefix}.>"] if stacks is None else stacks)

    async def follow(self, metrics: Sequence[str], stacks: Sequence[str]) -> None:
        """Subscribe to exactly these subjects: new ones added, dropped ones unsubscribed.

        The seam for coordinated engines: which subjects an engine reads changes
        with the partitions it holds, while the inboxes and loops stay the same.
        """
        wanted = {**dict.fromkeys(metrics, self._metrics_inbox),
                  **dict.fromkeys(stacks, self._stacks_inbox)}
        for subject in [s for s in self._by_subject if s not in wanted]:
            await self._unsubscribe(self._by_subject.pop(subject))
        for subject, inbox in wanted.items():
            if subject not in self._by_subject:
                self._by_subject[subject] = await self._nc.subscribe(
                    subject, cb=inbox.put, pending_msgs_limit=self._pending_msgs,
                    pending_bytes_limit=self._pending_bytes)
        await self._nc.flush()

    @staticmethod
    async def _unsubscribe(sub: Subscription) -> None:
        try:
            await sub.unsubscribe()
        except Exception as exc:  # connection already gone: nothing more will arrive
            log.debug("unsubscribe %s: %s", sub.subject, exc)

    async def run(self) -> None:
        """Evaluate batches until ``stop`` closed the inboxes and they are empty."""
        await asyncio.gather(
            self._loop(self._metrics_inbox, self._metrics_prefix, decode_metric_batch,
                       self._on_metrics),
            self._loop(self._stacks_inbox, self._stacks_prefix, decode_stack_batch,
                       self._on_stacks))

    def behind(self) -> bool:
        """True while deadlines should wait for input still to come; core ingest never knows."""
        return False

    async def stop(self) -> None:
        """Stop taking input: unsubscribe, then let the loops finish what was received."""
        for sub in self._by_subject.values():
            await self._unsubscribe(sub)
        self._by_subject.clear()
        self._metrics_inbox.close()
        self._stacks_inbox.close()

    def on_slow_consumer(self, sub: Subscription | None) -> None:
        """nats-py dropped a message because our pending limits were exceeded: say so."""
        self._stats.drop("slow_consumer", 1)
        subject = sub.subject if sub is not None else "?"
        self._ratelog.log(
            logging.ERROR, f"slow:{subject}",
            f"SLOW CONSUMER: dropping messages on {subject}: the engine is behind by more than "
            f"{self._pending_msgs} messages or {self._pending_bytes} bytes "
            f"(engine.pending_msgs_limit / pending_bytes_limit); "
            f"{self._stats.dropped['slow_consumer']} dropped so far")

    def on_disconnect(self, stalled: float | None) -> None:
        """The connection broke: core NATS does not keep what it could not deliver; say so.

        ``stalled``: seconds the engine's loop had just stalled (``StallWatch.recent``);
        then the server most likely cut it off as a slow consumer.
        """
        if stalled is not None:
            self._stats.disconnected("slow_consumer")
            log.error(
                "INPUT LOST: the NATS server disconnected the engine as a SLOW CONSUMER after "
                "its event loop stalled for %.1fs (a server drops a client that does not read "
                "for its write_deadline, 10s by default: SIGSTOP, a long pause, CPU "
                "starvation); what the server had buffered for it and everything published on "
                "%s.> and %s.> until the reconnect is lost (%d such disconnects so far; "
                "durable ingest keeps it: docs/operations.md)", stalled,
                self._metrics_prefix, self._stacks_prefix,
                self._stats.dropped["slow_consumer_disconnects"])
        else:
            self._stats.disconnected("other")
            log.error("INPUT LOST: disconnected from NATS; samples published on %s.> and %s.> "
                      "until the reconnect are not received (core ingest; %d disconnects so "
                      "far)", self._metrics_prefix, self._stacks_prefix,
                      self._stats.dropped["disconnects"])

    async def _loop(self, inbox: Inbox, prefix: str,
                    decode: Callable[..., Decoded[Any]],
                    handle: Callable[[list[Segment[Any]]], None]) -> None:
        """Take what arrived, decode it as one batch, count it, hand it on; until closed."""
        prefix_len = len(prefix) + 1
        while msgs := await inbox.take():
            decoded = decode(msgs, prefix_len, traced=self._traced(), limits=self._limits)
            await self._account(len(msgs), decoded)
            if decoded.samples <= MAX_SAMPLES_PER_TURN:
                if decoded.segments:
                    handle(decoded.segments)
                continue
            for turn in turns(decoded.segments, MAX_SAMPLES_PER_TURN):
                handle(turn)
                await asyncio.sleep(0)  # let the timers, publishes and lease beats run

    async def _account(self, messages: int, decoded: Decoded[Any]) -> None:
        self._stats.received(messages, decoded.samples)
        for rejection in decoded.rejected:
            await self._invalid.reject(rejection.msg, rejection.reason, rejection.detail)
