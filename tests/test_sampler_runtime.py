"""The sampler runtime: publishing, stamping, labels, and isolation of failing samplers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence

import pytest
from nats.aio.client import Client

from flarebus.config import SamplerSettings
from flarebus.errors import PluginConfigError, PluginError
from flarebus.events import MetricSample, decode_metrics
from flarebus.publish import Publisher
from flarebus.sampler import Sample, Sampler, gauge
from flarebus.samplers.runtime import SamplerRunner, build_samplers, default_labels, stamp
from tests.support import collect


class Counting(Sampler):
    name = "counting"
    default_interval = 0.05

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.calls = 0

    async def collect(self) -> Sequence[Sample]:
        self.calls += 1
        return [gauge(self.metric, self.calls, origin="sampler", env="sampler-says")]


class Exploding(Counting):
    name = "exploding"

    async def collect(self) -> Sequence[Sample]:
        self.calls += 1
        raise RuntimeError("endpoint down")


class FlakyInit(Counting):
    name = "flaky"

    def __init__(self, metric: str) -> None:
        super().__init__(metric)
        self.inits = 0

    async def init(self, config: object) -> None:
        self.inits += 1
        if self.inits < 3:
            raise ConnectionError(f"not yet ({self.inits})")


class ShortStream(Counting):
    name = "short-stream"
    default_interval = None

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        self.calls += 1
        yield [gauge(self.metric, self.calls)]


async def _run(nc: Client, runner: SamplerRunner, subject: str, count: int) -> list[MetricSample]:
    box = await collect(nc, subject)
    await runner.start()
    try:
        msgs = await box.wait_for(count)
    finally:
        await runner.stop()
    return [s for m in msgs for s in decode_metrics(m.data)]


async def test_a_failing_sampler_is_logged_retried_and_isolated(
        nc: Client, caplog: pytest.LogCaptureFixture) -> None:
    """One sampler raising on every run is retried with backoff; the other keeps publishing."""
    good, bad = Counting("rt.good"), Exploding("rt.bad")
    runner = SamplerRunner(Publisher(nc, batch=False), backoff_initial=0.05, backoff_max=0.1)
    runner.add(good)
    bad_slot = runner.add(bad)
    with caplog.at_level(logging.WARNING, logger="flarebus.samplers"):
        samples = await _run(nc, runner, "metrics.rt.good", 6)
        while bad.calls < 2:
            await asyncio.sleep(0.05)
    assert [s.value for s in samples[:6]] == [1, 2, 3, 4, 5, 6]
    assert bad_slot.stats.failures >= 2 and bad.calls >= 2
    assert "RuntimeError: endpoint down" in (bad_slot.stats.last_error or "")
    assert any("sampler exploding failed" in r.message and "retrying in" in r.message
               for r in caplog.records)


async def test_a_sampler_whose_init_fails_is_initialised_again(nc: Client) -> None:
    """init() failures back off and retry until it succeeds, then samples flow."""
    flaky = FlakyInit("rt.flaky")
    runner = SamplerRunner(Publisher(nc, batch=False), backoff_initial=0.02, backoff_max=0.05)
    slot = runner.add(flaky)
    samples = await _run(nc, runner, "metrics.rt.flaky", 1)
    assert flaky.inits == 3
    assert slot.stats.failures == 2
    assert samples[0].value == 1


async def test_an_ended_stream_is_restarted(nc: Client) -> None:
    """A stream sampler whose stream ends is started again (after backoff)."""
    stream = ShortStream("rt.stream")
    runner = SamplerRunner(Publisher(nc, batch=False), backoff_initial=0.02, backoff_max=0.05)
    runner.add(stream)
    samples = await _run(nc, runner, "metrics.rt.stream", 3)
    assert [s.value for s in samples[:3]] == [1, 2, 3]


async def test_samples_are_stamped_and_labelled(nc: Client) -> None:
    """ts is the collection time; host is defaulted; configured labels win over the sampler's."""
    runner = SamplerRunner(Publisher(nc))
    runner.add(Counting("rt.labels"), interval=0.05, labels={"env": "prod", "service": "api"})
    before = time.time()
    sample = (await _run(nc, runner, "metrics.rt.labels", 1))[0]
    assert before <= sample.ts <= time.time()  # type: ignore[operator]
    assert sample.labels == {"host": default_labels()["host"], "origin": "sampler",
                             "env": "prod", "service": "api"}


def test_stamp_keeps_a_timestamp_the_sampler_gave() -> None:
    """A sample that already has ts keeps it; others get the collection time."""
    out = stamp([MetricSample("a", 1.0, 5.0), MetricSample("b", 2.0)], 9.0, {"env": "x"})
    assert [s.ts for s in out] == [5.0, 9.0]
    assert all(s.labels["env"] == "x" for s in out)


def test_bad_sampler_config_is_rejected_before_running() -> None:
    """Every problem of every spec is named with plugin and key; an unknown name lists samplers."""
    specs = [SamplerSettings(sampler="prometheus"),
             SamplerSettings(sampler="system", config={"mountz": ["/"]})]
    with pytest.raises(PluginConfigError) as info:
        build_samplers(specs)
    text = str(info.value)
    assert "plugin 'prometheus': missing required key 'url'" in text
    assert "plugin 'system': mountz: unknown key; did you mean 'mounts'?" in text
    with pytest.raises(PluginError, match=r"no such sampler \(known: exec, .*prometheus"):
        build_samplers([SamplerSettings(sampler="nope")])
    with pytest.raises(PluginError, match="is an action, not a sampler"):
        build_samplers([SamplerSettings(sampler="log")])
