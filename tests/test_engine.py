"""The engine service end to end: real nats-server, real `flarebus engine` processes."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

from nats.aio.client import Client

from flarebus import bus
from flarebus.bus import REASON_HEADER
from flarebus.config import NatsSettings
from flarebus.nats_server import EmbeddedNats
from flarebus.publish import Publisher
from tests.engine_support import EngineProcess, stream_triggers, summaries, wait_triggers
from tests.support import collect
from tests.test_ingest import MALFORMED


def rule_file(path: Path, *rules: str) -> Path:
    path.write_text("rules:\n" + "".join(rules))
    return path


def rule(name: str, metric: str, when: str = "> 80", for_: str = "0s", extra: str = "") -> str:
    return (f"  - name: {name}\n    metric: {metric}\n    when: \"{when}\"\n"
            f"    for: {for_}\n    actions: [log]\n{extra}")


async def send(nc: Client, name: str, value: float, ts: float | None = None,
               **labels: str) -> float:
    """Publish one sample (ts defaults to now); returns its ts."""
    ts = time.time() if ts is None else ts
    pub = Publisher(nc, batch=False)
    await pub.sample(name, value, ts, **labels)
    await pub.close()
    return ts


class TestFiring:
    """Samples in, exactly one trigger per transition out, on JetStream."""

    async def test_fires_once_then_resolves(self, nc: Client, nats_url: str,
                                            tmp_path: Path) -> None:
        """A held crossing fires exactly once; a sample below resolves exactly once."""
        rules = rule_file(tmp_path / "r.yaml", rule("e2e-hold", "e2e.cpu", for_="500ms"))
        engine = EngineProcess(nats_url, [rules]).start()
        try:
            t0 = time.time()
            for i in range(4):  # t0 .. t0+0.6: holds past `for`
                await send(nc, "e2e.cpu", 90 + i, t0 + 0.2 * i, host="a")
            await wait_triggers(nc, "triggers.e2e-hold", 1)
            await send(nc, "e2e.cpu", 50, t0 + 1.0, host="a")
            got = await wait_triggers(nc, "triggers.e2e-hold", 2)
            await asyncio.sleep(0.5)  # anything extra would have arrived by now
            got = await stream_triggers(nc, "triggers.e2e-hold")
            assert [t.state for t in got] == ["firing", "resolved"]
            assert got[0].labels == {"host": "a"} and got[0].metric_name == "e2e.cpu"
            assert got[0].active_since == t0 and got[0].at == t0 + 0.5  # `for` after t0
            assert got[1].at == t0 + 1.0
        finally:
            engine.stop_ok()

    async def test_timer_fires_after_for_without_more_samples(
            self, nc: Client, nats_url: str, tmp_path: Path) -> None:
        """One sample above the threshold, then silence: the timer fires at ts + for."""
        rules = rule_file(tmp_path / "r.yaml", rule("e2e-timer", "e2e.timer", for_="1s"))
        engine = EngineProcess(nats_url, [rules]).start()
        try:
            ts = await send(nc, "e2e.timer", 99, host="b")
            (trigger,) = await wait_triggers(nc, "triggers.e2e-timer", 1)
            assert trigger.state == "firing"
            assert trigger.active_since == ts and trigger.at == ts + 1.0
        finally:
            engine.stop_ok()


class TestRestart:
    """State survives kill -9 and server restarts; nothing twice, nothing lost."""

    async def test_kill9_resumes_pending_and_keeps_firing(self, nc: Client, nats_url: str,
                                                          tmp_path: Path) -> None:
        """kill -9 while one series pends and one fires: pending fires at its time, none twice."""
        rules = rule_file(tmp_path / "r.yaml",
                          rule("k9-pending", "k9.pending", for_="3s"),
                          rule("k9-firing", "k9.firing", for_="0s"))
        engine = EngineProcess(nats_url, [rules]).start()
        try:
            await send(nc, "k9.firing", 95, host="f")
            await wait_triggers(nc, "triggers.k9-firing", 1)
            ts = await send(nc, "k9.pending", 95, host="p")
            await asyncio.sleep(1.0)  # several checkpoint intervals (0.2s)
            engine.kill9()
            engine.start()
            (fired,) = await wait_triggers(nc, "triggers.k9-pending", 1)
            assert fired.state == "firing"
            assert fired.active_since == ts and fired.at == ts + 3.0
            await asyncio.sleep(0.5)
            assert not [line for line in engine.lines if "trigger k9-firing" in line]
            assert len(await stream_triggers(nc, "triggers.k9-firing")) == 1
            assert len(await stream_triggers(nc, "triggers.k9-pending")) == 1
        finally:
            engine.stop_ok()

    async def test_nats_restart_under_running_engine(self, tmp_path: Path) -> None:
        """Server killed and restarted: the engine reconnects, publishes what came due meanwhile."""
        server = EmbeddedNats(tmp_path / "nats")
        server.start()
        rules = rule_file(tmp_path / "r.yaml", rule("nr-due", "nr.cpu", for_="1s"))
        engine = EngineProcess(server.url, [rules])
        nc = None
        try:
            engine.start()
            nc = await bus.connect(NatsSettings(servers=[server.url], reconnect_wait=0.2))
            ts = await send(nc, "nr.cpu", 90, host="during")
            await asyncio.sleep(0.3)
            server.kill()
            await asyncio.sleep(1.5)  # the deadline passes while the server is away
            mark = len(engine.lines)
            server.start()
            engine.wait_for_log("reconnected to NATS", 20, after=mark)
            (due,) = await wait_triggers(nc, "triggers.nr-due", 1, timeout=30)
            assert due.at == ts + 1.0
            await send(nc, "nr.cpu", 91, host="after")  # and it carries on
            got = await wait_triggers(nc, "triggers.nr-due", 2, timeout=15)
            assert sorted(t.labels["host"] for t in got) == ["after", "during"]
        finally:
            engine.stop_ok()
            if nc is not None:
                await nc.close()
            server.stop()


class TestReload:
    """Hot reload: valid sets apply, invalid sets are rejected whole."""

    async def test_valid_then_invalid_change(self, nc: Client, nats_url: str,
                                             tmp_path: Path) -> None:
        """A valid edit applies on SIGHUP; an invalid one is logged and the old rules keep going."""
        path = rule_file(tmp_path / "r.yaml", rule("rl-a", "rl.cpu", when="> 80"))
        engine = EngineProcess(nats_url, [path]).start()
        try:
            await send(nc, "rl.cpu", 85, host="h1")
            await wait_triggers(nc, "triggers.rl-a", 1)
            mark = len(engine.lines)
            rule_file(path, rule("rl-a", "rl.cpu", when="> 90"))
            engine.signal(signal.SIGHUP)
            engine.wait_for_log("rules reloaded", after=mark)
            await send(nc, "rl.cpu", 85, host="h2")  # no longer above the new threshold
            await send(nc, "rl.cpu", 95, host="h3")
            got = await wait_triggers(nc, "triggers.rl-a", 3)  # h1 resolved (changed), h3 fires
            assert {(t.labels["host"], t.state) for t in got} == {
                ("h1", "firing"), ("h1", "resolved"), ("h3", "firing")}
            mark = len(engine.lines)
            path.write_text("rules:\n  - name: rl-a\n    metric: rl.cpu\n    when: \"> 70\"\n"
                            "    for: \"30 sec\"\n")
            line = engine.wait_for_log(re.escape(str(path)) + r":\d+:\d+: ", after=mark)
            assert "rl-a" in line
            engine.wait_for_log("rejected", after=mark)
            await send(nc, "rl.cpu", 95, host="h4")  # the old (> 90) rule still runs
            await send(nc, "rl.cpu", 75, host="h5")  # the rejected (> 70) one does not
            got = await wait_triggers(nc, "triggers.rl-a", 4)
            await asyncio.sleep(0.3)
            hosts = {t.labels["host"] for t in await stream_triggers(nc, "triggers.rl-a")}
            assert hosts == {"h1", "h3", "h4"}
        finally:
            engine.stop_ok()


class TestBadInput:
    """Malformed input never stops the engine."""

    async def test_10k_malformed_messages(self, nc: Client, nats_url: str,
                                          tmp_path: Path) -> None:
        """10k bad messages of every kind: engine alive, all counted, all on flarebus.invalid."""
        rules = rule_file(tmp_path / "r.yaml", rule("bad-alive", "bad.alive"))
        invalid = await collect(nc, bus.INVALID_SUBJECT)
        engine = EngineProcess(nats_url, [rules]).start()
        try:
            expected: dict[str, int] = {}
            for i in range(10_000):
                tail, data, reason = MALFORMED[i % len(MALFORMED)]
                await nc.publish(f"metrics.{tail}", data.encode())
                expected[reason] = expected.get(reason, 0) + 1
            await nc.publish("stacks.api", b"{nope")
            expected["malformed-json"] += 1
            await nc.flush()
            await invalid.wait_for(10_001, timeout=30)
            assert all(REASON_HEADER in m.headers for m in invalid.messages)
            await send(nc, "bad.alive", 99)
            await wait_triggers(nc, "triggers.bad-alive", 1)
            await asyncio.sleep(0.5)  # a checkpoint writes the summary with the counters
            assert engine.proc is not None
            summary = next(s for s in (await summaries(nc)).values() if s.pid == engine.proc.pid)
            assert summary.stats["rejected"] == expected
        finally:
            engine.stop_ok()


class TestShards:
    """--shard i/N splits the series between engines."""

    async def test_two_shards_each_series_once(self, nc: Client, nats_url: str,
                                               tmp_path: Path) -> None:
        """Two engines, 40 series: each series is tracked and fired by exactly one of them."""
        rules = rule_file(tmp_path / "r.yaml", rule("shard-r", "shard.cpu", when="> 0"))
        a = EngineProcess(nats_url, [rules], "--shard", "0/2")
        b = EngineProcess(nats_url, [rules], "--shard", "1/2")
        a.start()
        b.start()
        try:
            pub = Publisher(nc)
            ts = time.time()
            for i in range(40):
                await pub.sample("shard.cpu", 5, ts, series=f"s{i}")
            await pub.close()
            got = await wait_triggers(nc, "triggers.shard-r", 40)
            assert sorted(t.labels["series"] for t in got) == sorted(f"s{i}" for i in range(40))
            await asyncio.sleep(0.6)
            both = await summaries(nc)
            s0, s1 = both["0/2"], both["1/2"]
            firing0 = {st.labels["series"] for st in s0.states if st.rule == "shard-r"}
            firing1 = {st.labels["series"] for st in s1.states if st.rule == "shard-r"}
            assert firing0.isdisjoint(firing1)
            assert firing0 | firing1 == {f"s{i}" for i in range(40)}
            assert firing0 and firing1
            published = [line for e in (a, b) for line in e.lines if "trigger shard-r" in line]
            assert len(published) == 40
        finally:
            a.stop_ok()
            b.stop_ok()
