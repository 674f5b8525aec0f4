"""Fault suite: an engine stalled (SIGSTOP) under load, against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.engine.service.summary import EngineSummary
from flarebus.nats_server import EmbeddedNats
from tests.engine_support import EngineProcess, summaries, wait_triggers
from tests.fault_support import flood, impatient_server, stalled
from tests.support import run_flarebus
from tests.test_engine import rule, rule_file, send


async def wait_summary(nc: Client, check: Callable[[EngineSummary], bool],
                       timeout: float = 30.0) -> EngineSummary:
    """The engine's summary once ``check(summary)`` holds (fails with the last one seen)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = (await summaries(nc)).get("0/1")
        if last is not None and check(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"summary never matched; last: {last}")


class TestCoreStall:
    """Core ingest: a stall long enough for a server-side slow-consumer cut is told, not hidden."""

    async def test_slow_consumer_disconnect_is_counted_logged_and_recovered(
            self, tmp_path: Path) -> None:
        """SIGSTOP past write_deadline under 300k samples: counted, logged loud, writes recover."""
        server: EmbeddedNats = impatient_server(tmp_path)
        server.start()
        rules = rule_file(tmp_path / "r.yaml", rule("stall-core", "stall.core"))
        engine = EngineProcess(server.url, [rules])
        nc = await bus.connect(NatsSettings(servers=[server.url]))
        try:
            engine.start()
            mark = len(engine.lines)
            published = asyncio.ensure_future(
                flood(nc, "metrics.stall.flood", "stall.flood", 300_000, time.time()))
            resumed = await stalled(engine, 6.0, published)
            line = engine.wait_for_log("INPUT LOST", 30, after=mark)
            assert "SLOW CONSUMER" in line, line
            summary = await wait_summary(nc, lambda s: s.updated_at > resumed + 1)
            dropped = summary.stats["dropped"]
            assert dropped.get("slow_consumer_disconnects") == 1, dropped
            received = summary.stats["samples_received"]
            assert received < 300_000, f"{received} of 300000 received: no samples were lost?"
            failed = [x for x in engine.lines[mark:] if "checkpoint write" in x]
            assert not failed, f"{len(failed)} failed checkpoint writes after reconnect: {failed}"
            await send(nc, "stall.core", 99, host="after")  # and it evaluates again
            (fired,) = await wait_triggers(nc, "triggers.stall-core", 1, timeout=20)
            assert fired.labels == {"host": "after"}
            status = run_flarebus("status", "--nats", server.url)
            assert "INPUT LOST: slow_consumer_disconnects 1" in status.stdout, status.stdout
        finally:
            engine.stop()
            await nc.close()
            server.stop()
