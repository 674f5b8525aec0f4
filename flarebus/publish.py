"""The publisher user programs and samplers call to put samples on the bus.

::

    async with Publisher(nc) as pub:
        await pub.sample("cpu.usage", 93.5, host="web-1")

With batching on (the default), samples sent close together go out as one
JSON-array message per subject: a batch is sent when it holds ``max_batch``
samples, or ``linger`` seconds after its first sample, and on
``flush()``/``close()``; no message exceeds ``max_bytes`` (nor the server's
max_payload) — a batch that encodes larger is split. Batches hold the Structs
and are encoded once, as a list, which is what makes batching cheap per
sample. With ``batch=False`` each sample is its own message, sent at once.
``stale(name, **labels)`` sends a staleness marker: the series ended.

The trace context of the caller (if a span is recording) travels in the NATS
headers, so the engine's spans join the publisher's trace.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from types import TracebackType

from nats.aio.client import Client

from flarebus import telemetry
from flarebus.errors import SampleError
from flarebus.events import (
    MetricSample,
    StackSample,
    WireSample,
    encoder,
    is_metric_name,
    is_token,
    known_label_names,
    stale_marker,
)

DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_LINGER = 0.005


class _Batch:
    """Samples waiting to go out on one subject, and the trace context of the first."""

    __slots__ = ("headers", "samples")

    def __init__(self, headers: dict[str, str] | None) -> None:
        self.samples: list[MetricSample | WireSample | StackSample] = []
        self.headers = headers


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SampleError(f"value: {value!r} is not a number") from None


def _check_labels(labels: Mapping[str, object]) -> None:
    for key, label in labels.items():
        if not isinstance(label, str):
            raise SampleError(f"labels.{key}: must be a string, got {label!r}")


def _field_first(exc: ValueError) -> str:
    """MetricSample's "`ts` must be ..." as a SampleError says it: "ts: must be ..."."""
    return str(exc).replace("`", "").replace(" must", ": must", 1)


def _checked(name: str, value: float, ts: float | None, labels: dict[str, str]) -> MetricSample:
    """A MetricSample, or the SampleError its own checks raise (NaN, infinity, negative ts...)."""
    try:
        return MetricSample(name, value, ts, labels)
    except ValueError as exc:
        raise SampleError(_field_first(exc)) from None


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
        self._last_slot = self._max_batch - 1  # shorter than this: not full after one more
        server_limit = nc.max_payload if nc.is_connected and nc.max_payload else max_bytes
        self._max_bytes = max(1024, min(max_bytes, server_limit))
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
        """Publish one sample of ``name``; keyword arguments are its labels.

        The hot path of every user program: names are validated once and
        cached, and a batched sample costs a Struct and a list append.
        """
        subject = self._subjects.get(name) or self._subject(name)
        if value.__class__ is not float:
            value = _number(value)
        if ts is None and self._stamp:
            ts = time.time()
        # MetricSample's checks, inline and in C where possible (the name's were done
        # once, by _subject): a WireSample has no __post_init__ to call, which was a
        # third of a batched sample's cost (bench/publish.py). Anything doubtful takes
        # the full path, which raises MetricSample's own error.
        # (x - x == 0.0 holds exactly for finite floats: inf - inf and NaN - NaN are NaN.)
        # The label values' check is a loop inline: `str.join` over them, in a call of its
        # own, was the dearest line of a batched sample (docs/performance.md, third round).
        good = value - value == 0.0 and (ts is None or (
            ts.__class__ is float and ts >= 0.0 and ts - ts == 0.0)) and (
            not labels or known_label_names(labels))
        if good:
            for label in labels.values():
                if label.__class__ is not str:
                    good = False
                    break
        if good:
            sample: MetricSample | WireSample = WireSample(name, value, ts, labels)
        else:
            _check_labels(labels)
            sample = _checked(name, value, ts, labels)
        # _put() and _buffer() inlined: each coroutine or call fewer per sample measured
        # 10-15% more batched samples/s (bench/publish.py, A/B in one session).
        if not self._batching:
            await self._nc.publish(subject, encoder.encode(sample),
                                   headers=telemetry.inject_headers())
            self.published_messages += 1
            self.published_samples += 1
            return
        batch = self._pending.get(subject)
        if batch is not None and len(batch.samples) < self._last_slot:
            batch.samples.append(sample)
        elif full := self._buffer(subject, sample):
            await self._publish(subject, full.samples, full.headers)

    async def stale(self, name: str, ts: float | None = None, /, **labels: str) -> None:
        """Say the series ``name{labels}`` ended (at ``ts``; default now): a staleness marker.

        Rules treat the series as gone at that instant, as Prometheus does when a
        series vanishes from a scrape: a firing alert on it resolves then, not
        when ``missing.after`` runs out. Send one when your program stops
        reporting a series (a worker retired, a queue deleted, a shutdown).
        """
        subject = self._subject(name)
        _check_labels(labels)
        if ts is None and self._stamp:
            ts = time.time()
        try:
            marker = stale_marker(name, ts, labels)
        except ValueError as exc:
            raise SampleError(_field_first(exc)) from None
        await self._put(subject, marker)

    async def send(self, sample: MetricSample) -> None:
        """Publish an already built (and so already validated) MetricSample (or marker)."""
        if sample.ts is None and self._stamp:
            sample = MetricSample(sample.name, sample.value, time.time(), sample.labels,
                                  sample.stale)
        await self._put(self._subject(sample.name), sample)

    async def send_many(self, samples: Iterable[MetricSample]) -> None:
        for sample in samples:
            await self.send(sample)

    async def send_stacks(self, sample: StackSample) -> None:
        """Publish a StackSample on ``<stacks_prefix>.<source>``."""
        if not is_token(sample.source):
            raise SampleError(f"source: {sample.source!r} is not a subject token")
        if sample.ts is None and self._stamp:
            sample.ts = time.time()
        await self._put(f"{self._stacks_prefix}.{sample.source}", sample)

    async def _put(self, subject: str, sample: MetricSample | StackSample) -> None:
        if not self._batching:
            await self._nc.publish(subject, encoder.encode(sample),
                                   headers=telemetry.inject_headers())
            self.published_messages += 1
            self.published_samples += 1
        elif full := self._buffer(subject, sample):
            await self._publish(subject, full.samples, full.headers)

    def _buffer(self, subject: str, sample: MetricSample | WireSample | StackSample
                ) -> _Batch | None:
        """Add to the subject's batch (synchronous: no coroutine per sample); the batch if full."""
        batch = self._pending.get(subject)
        if batch is None:
            batch = self._pending[subject] = _Batch(telemetry.inject_headers())
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._linger,
                                                                    self._on_linger)
        batch.samples.append(sample)
        if len(batch.samples) >= self._max_batch:
            return self._pending.pop(subject)
        return None

    def _on_linger(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _publish(self, subject: str,
                       samples: list[MetricSample | WireSample | StackSample],
                       headers: dict[str, str] | None) -> None:
        """One message for ``samples``, or two halves (recursively) if it would be too big."""
        payload = encoder.encode(samples[0] if len(samples) == 1 else samples)
        if len(payload) > self._max_bytes and len(samples) > 1:
            middle = len(samples) // 2
            await self._publish(subject, samples[:middle], headers)
            await self._publish(subject, samples[middle:], headers)
            return
        await self._nc.publish(subject, payload, headers=headers)
        self.published_messages += 1
        self.published_samples += len(samples)

    async def flush(self) -> None:
        """Send every pending batch now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, {}
        for subject, batch in pending.items():
            await self._publish(subject, batch.samples, batch.headers)

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
