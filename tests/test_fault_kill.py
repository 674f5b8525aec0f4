"""Fault suite: kill -9 of the engine under steady load (durable ingest): nothing lost, none twice.

The kill -9 tests of core ingest (pending series resumed, a nats-server killed
under a running engine) are in tests/test_engine.py::TestRestart; the worker's
in tests/test_worker_processes.py. This one adds load: a publisher keeps
sending while the engine dies and comes back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from flarebus.publish import Publisher
from tests.engine_support import stream_triggers, wait_triggers
from tests.fault_support import engine_on_own_server
from tests.test_engine import rule, rule_file
from tests.test_fault_stall import durable_config

SERIES = 60


class TestKillUnderLoad:
    """kill -9 of a durable engine while samples flow: every trigger once, at its event time."""

    async def test_kill9_under_load_loses_no_trigger_and_repeats_none(
            self, tmp_path: Path) -> None:
        """60 series cross while a publisher runs and the engine is killed twice: 60 triggers."""
        rules = rule_file(tmp_path / "r.yaml", rule("kl-cross", "kl.cpu", for_="1s"))
        crossed: dict[str, float] = {}
        async with engine_on_own_server(tmp_path, rules, "--config",
                                        str(durable_config(tmp_path))) as (engine, nc):

            async def load() -> None:
                pub = Publisher(nc)
                for step in range(SERIES):
                    ts = time.time()
                    for k in range(200):  # background: quiet series
                        await pub.sample("kl.cpu", 1, ts, host=f"quiet{k}")
                    host = f"s{step}"
                    await pub.sample("kl.cpu", 95, ts, host=host)
                    crossed[host] = ts
                    await pub.flush()
                    await asyncio.sleep(0.05)
                await pub.close()

            loading = asyncio.ensure_future(load())
            for _ in range(2):
                await asyncio.sleep(1.0)
                engine.kill9()
                await asyncio.sleep(0.3)  # samples keep arriving while no engine runs
                engine.start()
            await loading
            got = await wait_triggers(nc, "triggers.kl-cross", SERIES, timeout=60)
            await asyncio.sleep(1.0)  # a duplicate would have arrived by now
            got = await stream_triggers(nc, "triggers.kl-cross")
            hosts = sorted(t.labels["host"] for t in got)
            assert hosts == sorted(crossed), \
                f"{len(hosts)} triggers for {SERIES} series; missing " \
                f"{sorted(set(crossed) - set(hosts))}"
            late = [(t.labels["host"], t.at - crossed[t.labels["host"]]) for t in got
                    if t.at != crossed[t.labels["host"]] + 1.0]
            assert not late, f"{len(late)} triggers not at ts + for: {late[:5]}"
