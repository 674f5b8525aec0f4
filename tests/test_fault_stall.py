"""Fault suite: an engine stalled (SIGSTOP) under load, against a real nats-server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.engine_support import stream_triggers, wait_summary, wait_triggers
from tests.fault_support import engine_on_own_server, flood, stalled
from tests.support import run_flarebus
from tests.test_engine import rule, rule_file, send


class TestCoreStall:
    """Core ingest: a stall long enough for a server-side slow-consumer cut is told, not hidden."""

    async def test_slow_consumer_disconnect_is_counted_logged_and_recovered(
            self, tmp_path: Path) -> None:
        """SIGSTOP 20s (write_deadline 10s) under 300k samples: counted, logged, recovered."""
        rules = rule_file(tmp_path / "r.yaml", rule("stall-core", "stall.core"))
        async with engine_on_own_server(tmp_path, rules) as (engine, nc, _):
            mark = len(engine.lines)
            published = asyncio.ensure_future(
                flood(nc, "metrics.stall.flood", "stall.flood", 300_000, time.time()))
            resumed = await stalled(engine, 20.0, published)
            line = engine.wait_for_log("INPUT LOST", 30, after=mark)
            assert "SLOW CONSUMER" in line, line
            summary = await wait_summary(nc, lambda s: s.updated_at > resumed + 1)
            dropped = summary.stats["dropped"]
            assert dropped.get("slow_consumer_disconnects") == 1, dropped
            received = summary.stats["samples_received"]
            assert received < 300_000, f"{received} of 300000 received: no samples were lost?"
            failed = [x for x in engine.lines[mark:] if "checkpoint write" in x]
            assert not failed, f"{len(failed)} failed checkpoint writes after reconnect: {failed}"
            # a stall longer than the lease TTL (6s) lost this coordinated engine its
            # partitions: it evaluates again once it has claimed them back
            engine.wait_for_log("gained partitions", 30,
                                after=engine.lines.index(engine.wait_for_log("lost the lease",
                                                                             30, after=mark)))
            await send(nc, "stall.core", 99, host="after")  # and it evaluates again
            (fired,) = await wait_triggers(nc, "triggers.stall-core", 1, timeout=20)
            assert fired.labels == {"host": "after"}
            status = run_flarebus("status", "--nats", nc.connected_url.geturl())  # type: ignore[union-attr]
            assert "INPUT LOST: slow_consumer_disconnects 1" in status.stdout, status.stdout


def durable_config(tmp_path: Path) -> Path:
    conf = tmp_path / "flarebus.yaml"
    conf.write_text("engine:\n  ingest:\n    mode: durable\n    max_age: 10m\n")
    return conf


class TestDurableStall:
    """Durable ingest: a stall loses nothing, and deadlines keep event time."""

    async def test_stall_under_300k_samples_loses_nothing(self, tmp_path: Path) -> None:
        """SIGSTOP 30s under 300k samples: all received; the last sample fires at its ts; a
        pending series resolved in the backlog does not fire when the overdue timer runs."""
        rules = rule_file(tmp_path / "r.yaml", rule("dur-cross", "dur.cross"),
                          rule("dur-held", "dur.held", for_="2s"))
        async with engine_on_own_server(tmp_path, rules, "--config",
                                        str(durable_config(tmp_path))) as (engine, nc, _):
            t0 = await send(nc, "dur.held", 95, host="p")  # pending until t0 + 2s ...
            await wait_summary(nc, lambda s: s.pending == 1)
            crossing: list[float] = []

            async def load() -> None:
                await send(nc, "dur.held", 50, t0 + 1, host="p")  # ... resolved at t0 + 1
                await flood(nc, "metrics.dur.flood", "dur.flood", 300_000, time.time())
                crossing.append(await send(nc, "dur.cross", 99, host="x"))

            await stalled(engine, 30.0, asyncio.ensure_future(load()))
            (fired,) = await wait_triggers(nc, "triggers.dur-cross", 1, timeout=60)
            assert fired.at == crossing[0], (fired.at, crossing)
            summary = await wait_summary(
                nc, lambda s: s.stats["samples_received"] >= 300_003, timeout=60)
            assert summary.stats["samples_received"] == 300_003, summary.stats
            assert summary.stats["dropped"] == {}, summary.stats
            held = await stream_triggers(nc, "triggers.dur-held")
            assert held == [], f"{len(held)} triggers of a series resolved in the backlog"

    async def test_kill9_resumes_after_the_checkpointed_position(self, tmp_path: Path) -> None:
        """kill -9, samples published while no engine runs: evaluated after the restart,
        each once, and a series pending before the kill fires at ts + for."""
        rules = rule_file(tmp_path / "r.yaml", rule("dk-pend", "dk.pend", for_="3s"),
                          rule("dk-down", "dk.down"))
        async with engine_on_own_server(tmp_path, rules, "--config",
                                        str(durable_config(tmp_path))) as (engine, nc, _):
            ts = await send(nc, "dk.pend", 95, host="p")
            await send(nc, "dk.down", 5, host="before")
            await wait_summary(nc, lambda s: s.stats["samples_received"] >= 2)
            await asyncio.sleep(0.6)  # a checkpoint (0.2s) covers both
            engine.kill9()
            for i in range(20):  # nobody listens: the stream keeps them
                await send(nc, "dk.down", 99, ts + 0.1 + i * 0.01, host=f"h{i}")
            engine.start()
            (pend,) = await wait_triggers(nc, "triggers.dk-pend", 1, timeout=30)
            assert pend.at == ts + 3.0 and pend.active_since == ts
            down = await wait_triggers(nc, "triggers.dk-down", 20, timeout=30)
            await asyncio.sleep(0.5)
            down = await stream_triggers(nc, "triggers.dk-down")
            hosts = sorted(t.labels["host"] for t in down)
            assert hosts == sorted(f"h{i}" for i in range(20)), f"{len(hosts)} of 20: {hosts}"
            summary = await wait_summary(nc, lambda s: s.stats["samples_received"] >= 20)
            assert summary.stats["samples_received"] == 20, summary.stats  # none twice

    async def test_samples_expired_before_they_were_read_are_counted(
            self, tmp_path: Path) -> None:
        """Samples the stream dropped while no engine ran: counted as expired, logged as lost."""
        rules = rule_file(tmp_path / "r.yaml", rule("dx", "dx.cpu"))
        async with engine_on_own_server(tmp_path, rules, "--config",
                                        str(durable_config(tmp_path))) as (engine, nc, _):
            await send(nc, "dx.cpu", 1, host="a")
            await wait_summary(nc, lambda s: s.stats["samples_received"] == 1)
            await asyncio.sleep(0.6)  # a checkpoint (0.2s) stores the position
            engine.stop_ok()
            for i in range(5):
                await send(nc, "dx.cpu", 1, host=f"gone{i}")
            js = nc.jetstream()
            # stored, all five, before the purge (a core publish is not ordered with the API)
            deadline = time.monotonic() + 10
            while (await js.stream_info("FLAREBUS_SAMPLES")).state.last_seq < 6:
                assert time.monotonic() < deadline, "the five samples were not stored"
                await asyncio.sleep(0.05)
            await js.purge_stream("FLAREBUS_SAMPLES")  # as max_age would
            await send(nc, "dx.cpu", 99, host="kept")
            engine.start()
            line = engine.wait_for_log("INPUT LOST", 20)
            assert "5 samples left the stream" in line, line
            (fired,) = await wait_triggers(nc, "triggers.dx", 1)
            assert fired.labels == {"host": "kept"}
            # the restarted engine's summary (the first run's, with no drops, is there too)
            summary = await wait_summary(nc, lambda s: bool(s.stats["dropped"]))
            assert summary.stats["dropped"] == {"expired": 5}, summary.stats
