"""The samples stream's recent history, for ``flarebus replay --stream SINCE``.

Durable ingest keeps every sample published on ``metrics.>`` and ``stacks.>``
for ``engine.ingest.max_age``; the same stream lets a rule be backtested on
what the bus really carried. This reads it from ``since`` (Unix seconds) to
its last message at the time of the call, with an ephemeral consumer that acks
nothing, and decodes each message as the engine would. A sample without
``ts`` takes the time the server stored it, which is the time the engine
would have given it.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from flarebus.errors import BusError
from flarebus.events import MetricSample, StackSample, decode_metrics, decode_stacks


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A stored message that is not a sample: its stream sequence, subject and why."""

    seq: int
    subject: str
    reason: str


async def history(js: JetStreamContext, stream: str, since: float, metrics_prefix: str,
                  bad: list[BadMessage], *, batch: int = 1000
                  ) -> AsyncIterator[MetricSample | StackSample]:
    """Every sample stored in ``stream`` since ``since``, in stream order; bad ones to ``bad``."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        raise BusError([], f"no stream {stream!r}: durable ingest (engine.ingest.mode: "
                           "durable) has not run on this server", kind="jetstream") from None
    end = info.state.last_seq
    if not info.state.messages:
        return
    start = datetime.datetime.fromtimestamp(since, datetime.UTC)
    sub = await js.pull_subscribe("", stream=stream, config=ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.BY_START_TIME,
        opt_start_time=start, inactive_threshold=30.0))
    metrics_dot = metrics_prefix + "."
    try:
        while True:
            try:
                msgs = await sub.fetch(batch, timeout=2.0)
            except TimeoutError:
                return  # nothing since `since`, or the rest expired meanwhile
            for msg in msgs:
                meta = msg.metadata
                seq = meta.sequence.stream
                if seq > end:
                    return
                try:
                    samples: list[MetricSample] | list[StackSample] = (
                        decode_metrics(msg.data) if msg.subject.startswith(metrics_dot)
                        else decode_stacks(msg.data))
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    bad.append(BadMessage(seq, msg.subject, str(exc)))
                    continue
                stored = meta.timestamp.timestamp()
                for sample in samples:
                    if sample.ts is None:
                        sample.ts = stored
                    yield sample
                if seq >= end:
                    return
    finally:
        await sub.unsubscribe()
