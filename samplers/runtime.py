"""Runs samplers: on an interval (APScheduler) or as a stream, isolated from each other.

Samplers come from the one plugin registry (``flarebus.registry``) and have
the lifecycle every plugin kind has (``flarebus.plugin.open_plugin``): every
spec's config is validated before any sampler runs, then ``init(config)``.
Whether a sampler runs on an interval or as a stream is read after its first
``init``, because its config may decide (``exec`` with ``stream: true``).

Every sample goes out through the foundation's batching Publisher with ``ts``
stamped at collection time (when the sampler gave none) and the configured
labels added. A sampler that raises - in init, collect or its stream - is
logged and retried with exponential backoff (jittered); the others keep running, because
one dead exporter endpoint must not silence the host's heartbeat.

``run_samplers(nc, specs, stop=...)`` is the reusable entry point (``flarebus
sample`` and ``flarebus up`` both call it).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from nats.aio.client import Client

from flarebus.backoff import Backoff
from flarebus.config import SamplerSettings
from flarebus.errors import PluginConfigError, Problem, TargetDown, describe
from flarebus.events import MetricSample, StackSample, encoder
from flarebus.plugin import Sample, SamplerPlugin, close_plugin, maybe_await, open_plugin
from flarebus.plugin_config import ConfigOrigin, validated_config
from flarebus.publish import Publisher
from flarebus.registry import Registry, discover
from flarebus.yamlfile import YamlDocument

log = logging.getLogger("flarebus.samplers")

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0


_HOST = socket.gethostname()


def default_labels() -> dict[str, str]:
    """Labels every sample gets unless the sampler or the config says otherwise."""
    return {"host": _HOST}


@dataclass
class SamplerStats:
    """What a running sampler did: for logs, tests and `flarebus up`'s status."""

    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    samples: int = 0
    last_error: str | None = None


@dataclass
class Slot:
    """One configured sampler inside the runner, with its schedule and retry state."""

    sampler: SamplerPlugin
    config: Any  # validated: what init() receives
    interval: float | None  # None until the first init: then the sampler's default
    labels: dict[str, str]  # the configured labels: they win over the sampler's
    label: str
    stats: SamplerStats = field(default_factory=SamplerStats)
    ready: bool = False
    retry_at: float = 0.0
    task: asyncio.Task[None] | None = None
    finished: bool = False  # a stream that ended for good (stdin at its end)


class SampleOutput(Protocol):
    """Where the runner sends samples: the foundation's Publisher, or a printer."""

    async def send(self, sample: MetricSample) -> None: ...
    async def send_stacks(self, sample: StackSample) -> None: ...
    async def close(self) -> None: ...


class PrintOutput:
    """Writes each sample as a JSON line (``flarebus sample --print``: no server needed)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    async def send(self, sample: MetricSample) -> None:
        self.stream.write(encoder.encode(sample) + b"\n")

    async def send_stacks(self, sample: StackSample) -> None:
        self.stream.write(encoder.encode(sample) + b"\n")

    async def close(self) -> None:
        self.stream.flush()


class SamplerRunner:
    """Drives a set of samplers and publishes what they yield."""

    def __init__(self, publisher: SampleOutput, *, backoff_initial: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX) -> None:
        self.publisher = publisher
        self.slots: list[Slot] = []
        self.backoff = Backoff(backoff_initial, backoff_max)
        self._scheduler: AsyncIOScheduler | None = None
        #: set when every sampler has ended for good (only streams can)
        self.all_finished = asyncio.Event()

    def add(self, sampler: SamplerPlugin, config: Any = None, *, interval: float | None = None,
            labels: Mapping[str, str] | None = None) -> Slot:
        """Add a sampler with its validated ``config`` (see build_samplers; None: ``{}``).

        ``interval`` None means the sampler's default (None: a stream).
        """
        if interval is not None and interval <= 0:
            raise ValueError(f"sampler {sampler.name!r}: interval must be > 0")
        index = sum(1 for s in self.slots if s.sampler.name == sampler.name)
        label = sampler.name if not index else f"{sampler.name}#{index + 1}"
        slot = Slot(sampler, {} if config is None else config, interval, dict(labels or {}),
                    label)
        self.slots.append(slot)
        return slot

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        for slot in self.slots:
            slot.task = asyncio.create_task(self._run(slot), name=f"sampler-{slot.label}")

    async def stop(self) -> None:
        """Stop scheduling, end streams, close every sampler, flush what is pending."""
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        tasks = [s.task for s in self.slots if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in self.slots:
            await self._close(slot)
        await self.publisher.close()

    # -- the two ways a sampler runs --------------------------------------------------

    async def _run(self, slot: Slot) -> None:
        """Initialise (retried with backoff), then run on an interval or as a stream."""
        while not await self._open(slot):
            await asyncio.sleep(max(0.0, slot.retry_at - time.monotonic()))
        if slot.interval is None:
            slot.interval = slot.sampler.default_interval
        if slot.interval is None:
            await self._stream(slot)
            return
        assert self._scheduler is not None, "start() first"
        self._scheduler.add_job(
            self._tick, "interval", args=[slot], seconds=slot.interval,
            next_run_time=datetime.now(), max_instances=1, coalesce=True,
            misfire_grace_time=None, id=slot.label)

    async def _open(self, slot: Slot) -> bool:
        """init(config) unless it is open already; a failure is counted and backs off."""
        if slot.ready:
            return True
        try:
            await open_plugin(slot.sampler, slot.config)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(slot, exc)
            return False
        slot.ready = True
        return True

    async def _tick(self, slot: Slot) -> None:
        """One interval: (re)initialise if needed, collect, publish; failures back off."""
        if time.monotonic() < slot.retry_at or not await self._open(slot):
            return
        ts = time.time()
        try:
            try:
                samples = await asyncio.wait_for(maybe_await(slot.sampler.collect()),
                                                 timeout=slot.interval)
            except TargetDown as down:  # its series ended with it: say so, then fail
                await self._publish(slot, down.markers, ts)
                raise
            await self._publish(slot, samples, ts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a sampler's failure must never reach the scheduler
            await self._failed(slot, exc)
        else:
            slot.stats.consecutive_failures = 0

    async def _stream(self, slot: Slot) -> None:
        """A stream sampler: consume its batches; when it raises or ends, back off and restart."""
        while True:
            if not await self._open(slot):
                await asyncio.sleep(max(0.0, slot.retry_at - time.monotonic()))
                continue
            try:
                async for batch in slot.sampler.stream():
                    await self._publish(slot, batch, time.time())
                    slot.stats.consecutive_failures = 0
                if not getattr(slot.sampler, "restart_on_end", True):  # optional attribute
                    log.info("sampler %s: input ended", slot.label)
                    await self._close(slot)
                    slot.finished = True
                    if all(s.finished for s in self.slots):
                        self.all_finished.set()
                    return
                raise EOFError("stream ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(slot, exc)
                await asyncio.sleep(max(0.0, slot.retry_at - time.monotonic()))

    async def _failed(self, slot: Slot, exc: BaseException) -> None:
        stats = slot.stats
        stats.failures += 1
        stats.consecutive_failures += 1
        stats.last_error = describe(exc)
        delay = self.backoff.delay(stats.consecutive_failures)
        slot.retry_at = time.monotonic() + delay
        log.warning("sampler %s failed (%s, %d in a row); retrying in %.1fs",
                    slot.label, stats.last_error, stats.consecutive_failures, delay)
        if slot.ready:  # re-init on the next try: the failure may have broken its connection
            await self._close(slot)

    async def _close(self, slot: Slot) -> None:
        if not slot.ready:
            return
        slot.ready = False
        try:
            await close_plugin(slot.sampler)
        except Exception as exc:
            log.warning("sampler %s: close failed: %s", slot.label, exc)

    async def _publish(self, slot: Slot, samples: Sequence[Sample], ts: float) -> None:
        slot.stats.runs += 1
        for sample in stamp(samples, ts, slot.labels):
            if isinstance(sample, StackSample):
                await self.publisher.send_stacks(sample)
            else:
                await self.publisher.send(sample)
            slot.stats.samples += 1


def stamp(samples: Sequence[Sample], ts: float, labels: Mapping[str, str]) -> list[Sample]:
    """Samples with ``ts`` filled in and labels merged: default host < sampler's < configured."""
    defaults = default_labels()
    out: list[Sample] = []
    for sample in samples:
        merged = {**defaults, **sample.labels, **labels}
        if isinstance(sample, StackSample):
            out.append(StackSample(sample.source, sample.stacks,
                                   sample.ts if sample.ts is not None else ts,
                                   sample.unit, merged))
        else:
            out.append(MetricSample(sample.name, sample.value,
                                    sample.ts if sample.ts is not None else ts, merged,
                                    sample.stale))
    return out


def build_samplers(specs: Sequence[SamplerSettings], registry: Registry | None = None, *,
                   config_doc: YamlDocument | None = None
                   ) -> list[tuple[SamplerPlugin, Any, SamplerSettings]]:
    """Every spec's sampler (a new instance) and its validated config, before any runs.

    An unknown or clashing name is a PluginError; config mistakes of every spec
    are one PluginConfigError, located in ``config_doc`` (the config file whose
    ``samplers:`` the specs are) when given. ``registry`` defaults to entry points
    and built-ins.
    """
    registry = registry if registry is not None else discover()
    built: list[tuple[SamplerPlugin, Any, SamplerSettings]] = []
    problems: list[Problem] = []
    first_bad = ""
    for index, spec in enumerate(specs):
        sampler = registry.sampler(spec.sampler)
        origin = (ConfigOrigin(config_doc.file, config_doc, ("samplers", index, "config"))
                  if config_doc is not None else ConfigOrigin(f"<sampler {spec.sampler}>"))
        try:
            built.append((sampler, validated_config(sampler, spec.config, origin), spec))
        except PluginConfigError as exc:
            problems.extend(exc.problems)
            first_bad = first_bad or spec.sampler
    if problems:
        raise PluginConfigError(problems, plugin=first_bad)
    return built


async def run_samplers(nc: Client | None, specs: Sequence[SamplerSettings], *,
                       stop: asyncio.Event | None = None,
                       labels: Mapping[str, str] | None = None,
                       output: SampleOutput | None = None,
                       metrics_prefix: str = "metrics", stacks_prefix: str = "stacks",
                       backoff_initial: float = BACKOFF_INITIAL,
                       backoff_max: float = BACKOFF_MAX,
                       registry: Registry | None = None,
                       config_doc: YamlDocument | None = None) -> SamplerRunner:
    """Run ``specs`` (the config's ``samplers:`` entries) until ``stop`` is set or cancelled
    (or every sampler ended for good, e.g. ``stdin`` at its end).

    Samples go to a batching Publisher on ``nc``, or to ``output`` when given. Every
    spec is built and its config validated before any runs (build_samplers says what
    is wrong). ``labels`` are added to every sampler's own configured labels. Returns
    the stopped runner (its slots hold each sampler's stats).
    """
    samplers = build_samplers(specs, registry, config_doc=config_doc)
    if output is None:
        if nc is None:
            raise ValueError("run_samplers needs a NATS connection or an output")
        output = Publisher(nc, metrics_prefix=metrics_prefix, stacks_prefix=stacks_prefix)
    runner = SamplerRunner(output, backoff_initial=backoff_initial, backoff_max=backoff_max)
    for sampler, config, spec in samplers:
        runner.add(sampler, config, interval=spec.interval,
                   labels={**(labels or {}), **spec.labels})
    await runner.start()
    waits = [asyncio.ensure_future(runner.all_finished.wait()),
             asyncio.ensure_future((stop or asyncio.Event()).wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()
        await asyncio.shield(runner.stop())
    return runner


async def collect_once(sampler: SamplerPlugin, config: Any = None,
                       labels: Mapping[str, str] | None = None) -> list[Sample]:
    """One collection (a stream's first batch), stamped and labelled; init and close around it.

    ``config`` is what ``init`` receives: validated (build_samplers) or trusted.
    """
    await open_plugin(sampler, {} if config is None else config)
    try:
        ts = time.time()
        batch: Sequence[Sample]
        if sampler.default_interval is None:
            stream = sampler.stream()
            try:
                batch = await anext(stream, [])
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        else:
            batch = await maybe_await(sampler.collect())
        return stamp(batch, ts, labels or {})
    finally:
        await close_plugin(sampler)
