"""The publisher user programs and samplers call to put samples on the bus.

::

    async with Publisher(nc) as pub:
        await pub.sample("cpu.usage", 93.5, host="web-1")

With batching on (the default), samples sent close together go out as one
JSON-array message per subject: a batch is flushed when it holds
``max_batch`` samples or ``max_bytes`` bytes, or ``linger`` seconds after its
first sample, whichever comes first, and on ``flush()``/``close()``. With
``batch=False`` each sample is its own message, as soon as it is sent.

The trace context of the caller (if a span is recording) travels in the NATS
headers, so the engine's spans join the publisher's trace.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from types import TracebackType

from nats.aio.client import Client

from engine import telemetry
from engine.errors import SampleError
from engine.events import MetricSample, StackSample, encoder, is_metric_name, is_token

DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_LINGER = 0.005


class _Batch:
    """Encoded samples waiting to go out on one subject."""

    __slots__ = ("headers", "nbytes", "parts")

    def __init__(self, headers: dict[str, str] | None) -> None:
        self.parts: list[bytes] = []
        self.nbytes = 2
        self.headers = headers


class Publisher:
    """Publishes MetricSamples (and StackSamples) to ``<prefix>.<name>`` subjects."""

    def __init__(self, nc: Client, *, metrics_prefix: str = "metrics",
                 stacks_prefix: str = "stacks", batch: bool = True,
                 max_batch: int = DEFAULT_MAX_BATCH, max_bytes: int = DEFAULT_MAX_BYTES,
                 linger: float = DEFAULT_LINGER, stamp: bool = True) -> None:
        self._nc = nc
        self._metrics_prefix = metrics_prefix
        self._stacks_prefix = stacks_prefix
        self._batching = batch
        self._max_batch = max(1, max_batch)
        limit = nc.max_payload if nc.is_connected and nc.max_payload else max_bytes + 1024
        self._max_bytes = max(1024, min(max_bytes, limit - 1024))
        self._linger = linger
        self._stamp = stamp
        # metric name -> subject; doubles as the cache of names already validated
        self._subjects: dict[str, str] = {}
        self._pending: dict[str, _Batch] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self.published_messages = 0
        self.published_samples = 0

    def _subject(self, name: str) -> str:
        subject = self._subjects.get(name)
        if subject is None:
            if not is_metric_name(name):
                raise SampleError(f"name: {name!r} is not a metric name "
                                  "(dot-separated tokens of letters, digits, _ and -)")
            subject = self._subjects[name] = f"{self._metrics_prefix}.{name}"
        return subject

    async def sample(self, name: str, value: float, ts: float | None = None, /,
                     **labels: str) -> None:
        """Publish one sample of ``name``; keyword arguments are its labels."""
        subject = self._subject(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SampleError(f"value: {value!r} is not a number") from None
        if not math.isfinite(value):
            raise SampleError(f"value: must be a finite number, got {value!r}")
        for key, label in labels.items():
            if not isinstance(label, str):
                raise SampleError(f"labels.{key}: must be a string, got {label!r}")
        if ts is None and self._stamp:
            ts = time.time()
        elif ts is not None and not (math.isfinite(ts) and ts >= 0):
            raise SampleError(f"ts: must be Unix seconds (a finite number >= 0), got {ts!r}")
        await self._put(subject, encoder.encode(MetricSample(name, value, ts, labels)))

    async def send(self, sample: MetricSample) -> None:
        """Publish an already built (and so already validated) MetricSample."""
        if sample.ts is None and self._stamp:
            sample = MetricSample(sample.name, sample.value, time.time(), sample.labels)
        await self._put(self._subject(sample.name), encoder.encode(sample))

    async def send_many(self, samples: Iterable[MetricSample]) -> None:
        for sample in samples:
            await self.send(sample)

    async def send_stacks(self, sample: StackSample) -> None:
        """Publish a StackSample on ``<stacks_prefix>.<source>``."""
        if not is_token(sample.source):
            raise SampleError(f"source: {sample.source!r} is not a subject token")
        if sample.ts is None and self._stamp:
            sample.ts = time.time()
        await self._put(f"{self._stacks_prefix}.{sample.source}", encoder.encode(sample))

    async def _put(self, subject: str, payload: bytes) -> None:
        if not self._batching:
            await self._nc.publish(subject, payload, headers=telemetry.inject_headers())
            self.published_messages += 1
            self.published_samples += 1
            return
        batch = self._pending.get(subject)
        if batch is None:
            batch = self._pending[subject] = _Batch(telemetry.inject_headers())
        elif batch.nbytes + len(payload) + 1 > self._max_bytes:
            await self._publish_batch(subject, self._pending.pop(subject))
            batch = self._pending[subject] = _Batch(telemetry.inject_headers())
        batch.parts.append(payload)
        batch.nbytes += len(payload) + 1
        if len(batch.parts) >= self._max_batch:
            await self._publish_batch(subject, self._pending.pop(subject))
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self._on_linger)

    def _on_linger(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _publish_batch(self, subject: str, batch: _Batch) -> None:
        parts = batch.parts
        payload = parts[0] if len(parts) == 1 else b"[" + b",".join(parts) + b"]"
        await self._nc.publish(subject, payload, headers=batch.headers)
        self.published_messages += 1
        self.published_samples += len(parts)

    async def flush(self) -> None:
        """Send every pending batch now and flush the connection."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for subject, batch in pending.items():
            await self._publish_batch(subject, batch)

    async def close(self) -> None:
        """Flush what is pending and wait until the server has it; the connection stays open."""
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self._nc.is_connected:
            await self._nc.flush()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
