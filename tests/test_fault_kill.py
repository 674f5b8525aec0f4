"""Fault suite: kill -9 of the engine or the nats-server under steady load (durable ingest).

The kill -9 tests of core ingest (pending series resumed, a nats-server killed
under a running engine) are in tests/test_engine.py::TestRestart; the worker's
in tests/test_worker_processes.py. These add load: a publisher keeps sending
while the engine, or the server, dies and comes back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus.publish import Publisher
from tests.engine_support import stream_triggers, wait_triggers
from tests.fault_support import engine_on_own_server
from tests.test_engine import rule, rule_file
from tests.test_fault_stall import durable_config

SERIES = 60


async def crossing_load(nc: Client, metric: str, crossed: dict[str, float]) -> None:
    """SERIES series cross one by one (every 50 ms) amid 200 quiet series: steady load."""
    pub = Publisher(nc)
    for step in range(SERIES):
        ts = time.time()
        for k in range(200):
            await pub.sample(metric, 1, ts, host=f"quiet{k}")
        host = f"s{step}"
        await pub.sample(metric, 95, ts, host=host)
        crossed[host] = ts
        await pub.flush()
        await asyncio.sleep(0.05)
    await pub.close()


async def assert_each_once_at_deadline(nc: Client, subject: str, crossed: dict[str, float],
                                       for_: float) -> None:
    """Every crossed series has exactly one trigger on the stream, at its ts + ``for_``."""
    await wait_triggers(nc, subject, len(crossed), timeout=60)
    await asyncio.sleep(1.0)  # a duplicate would have arrived by now
    got = await stream_triggers(nc, subject)
    hosts = sorted(t.labels["host"] for t in got)
    assert hosts == sorted(crossed), \
        f"{len(hosts)} triggers for {len(crossed)} series; missing " \
        f"{sorted(set(crossed) - set(hosts))}"
    late = [(t.labels["host"], t.at - crossed[t.labels["host"]]) for t in got
            if t.at != crossed[t.labels["host"]] + for_]
    assert not late, f"{len(late)} triggers not at ts + for: {late[:5]}"


class TestKillUnderLoad:
    """kill -9 under load (durable ingest): every trigger once, at its event time."""

    @pytest.mark.parametrize("victim", ["engine", "server"])
    async def test_kill9_under_load_loses_no_trigger_and_repeats_none(
            self, tmp_path: Path, victim: str) -> None:
        """60 series cross while the engine (twice) or the nats-server is killed: 60 triggers."""
        rules = rule_file(tmp_path / "r.yaml", rule("kl-cross", "kl.cpu", for_="1s"))
        crossed: dict[str, float] = {}
        async with engine_on_own_server(tmp_path, rules, "--config",
                                        str(durable_config(tmp_path))) as (engine, nc, server):
            loading = asyncio.ensure_future(crossing_load(nc, "kl.cpu", crossed))
            if victim == "engine":
                for _ in range(2):
                    await asyncio.sleep(1.0)
                    engine.kill9()
                    await asyncio.sleep(0.3)  # samples keep arriving while no engine runs
                    engine.start()
            else:
                await asyncio.sleep(1.0)
                mark = len(engine.lines)
                server.kill()
                await asyncio.sleep(1.0)  # the publisher buffers, the engine waits
                server.start()
                engine.wait_for_log("reconnected to NATS", 30, after=mark)
            await loading
            await assert_each_once_at_deadline(nc, "triggers.kl-cross", crossed, 1.0)
