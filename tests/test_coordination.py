"""Coordinated engines on a real partitioning nats-server: share, hand over, take over, fence."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.engine.service.coordinator import registry
from flarebus.engine.service.leases import EngineInfo, Fence
from flarebus.events import Stack, StackSample, Trigger, encoder
from flarebus.nats_server import EmbeddedNats
from flarebus.partitions import PARTITIONS, partition_of, ranges, server_mappings, strip_mark
from flarebus.publish import Publisher
from tests.engine_support import EngineProcess, stream_triggers, wait_triggers
from tests.support import run_flarebus
from tests.test_engine import rule, rule_file

#: Generous: a takeover is the lease TTL (6 s) plus a balance round and a restore.
TAKEOVER_WAIT = 40.0


@pytest.fixture(scope="module")
def pnats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """A server of this module's own that partitions metrics.> and stacks.> (as `up` does)."""
    with EmbeddedNats(tmp_path_factory.mktemp("pnats"), partitioned=True) as server:
        yield server


@pytest.fixture
async def pnc(pnats: EmbeddedNats) -> AsyncIterator[Client]:
    client = await bus.connect(NatsSettings(servers=[pnats.url], name="flarebus-test"))
    yield client
    await client.close()


async def engines(nc: Client) -> dict[int, EngineInfo]:
    """The live coordinated engines by pid."""
    kv = await bus.engine_leases_bucket(nc.jetstream(), ttl=6.0)
    found, _ = await registry(kv)
    return {e.pid: e for e in found}


Check = Callable[[dict[int, EngineInfo]], bool]


async def wait_engines(nc: Client, check: Check, what: str,
                       timeout: float = TAKEOVER_WAIT) -> dict[int, EngineInfo]:
    """Poll the registry until ``check(engines)`` holds; fail with what was seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await engines(nc)
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}; engines: {seen}")
        await asyncio.sleep(0.2)


def holding(pids: list[int], counts: dict[int, int] | None = None) -> Check:
    """A registry check: exactly these engines, all partitions held, optionally these counts."""
    def check(seen: dict[int, EngineInfo]) -> bool:
        if sorted(seen) != sorted(pids):
            return False
        held = [p for e in seen.values() for p in e.partitions]
        if sorted(held) != list(range(PARTITIONS)):
            return False
        return counts is None or all(len(seen[p].partitions) == n for p, n in counts.items())
    return check


def halves(a: EngineProcess, b: EngineProcess) -> dict[int, int]:
    """32 partitions each: the rebalance is over (a sample sent during it may be lost)."""
    return {a.pid: 32, b.pid: 32}


async def start_two(pnc: Client, url: str, rules: Path) -> tuple[EngineProcess, EngineProcess]:
    """Two engines, once they hold 32 partitions each."""
    a = EngineProcess(url, [rules], coordinated=True).start()
    b = EngineProcess(url, [rules], coordinated=True).start()
    try:
        await wait_engines(pnc, holding([a.pid, b.pid], halves(a, b)), "not shared")
    except BaseException:
        a.stop()
        b.stop()
        raise
    return a, b


async def send_pending(pnc: Client, names: list[str]) -> float:
    """One sample of each metric (its rule's series pending), tracked by the engines: its ts."""
    pub = Publisher(pnc)
    ts = time.time()
    for name in names:
        await pub.sample(name, 1.0, ts)
    await pub.close()
    await wait_engines(pnc, lambda s: sum(e.pending for e in s.values()) == len(names),
                       "pending series not tracked")
    return ts


def pending_rules(tmp_path: Path, prefix: str, count: int, rule_prefix: str,
                  for_: str) -> tuple[list[str], Path]:
    """``count`` metrics in as many partitions, each with a rule ``> 0`` for ``for_``."""
    names = names_spread(prefix, count)
    return names, rule_file(tmp_path / "r.yaml", *(
        rule(f"{rule_prefix}{i}", n, when="> 0", for_=for_) for i, n in enumerate(names)))


def names_spread(prefix: str, count: int) -> list[str]:
    """``count`` metric names in ``count`` different partitions."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < count:
        name = f"{prefix}{i}"
        names.setdefault(partition_of("metrics", name), name)
        i += 1
    return list(names.values())


async def wait_rules(nc: Client, prefix: str, count: int,
                     timeout: float = 15.0) -> list[Trigger]:
    """Poll the stream until it holds ``count`` triggers of rules named ``prefix``...; fail else."""
    deadline = time.monotonic() + timeout
    while True:
        got = [t for t in await stream_triggers(nc) if t.rule.startswith(prefix)]
        if len(got) >= count or time.monotonic() > deadline:
            assert len(got) >= count, f"{len(got)} of {count} {prefix}* triggers: {got}"
            return got
        await asyncio.sleep(0.2)


def trigger_lines(*procs: EngineProcess, rule_prefix: str) -> list[str]:
    return [line for p in procs for line in p.lines if f"trigger {rule_prefix}" in line]


class TestPartitions:
    """The server and flarebus agree on which partition a subject is in."""

    async def test_server_hash_matches(self, pnc: Client) -> None:
        """Samples published on plain subjects arrive on the partition partition_of computes."""
        got: list[str] = []

        async def on_msg(msg: object) -> None:
            got.append(msg.subject)  # type: ignore[attr-defined]

        sub = await pnc.subscribe("metrics.~.*.>", cb=on_msg)
        names = [f"hash.m{i}" for i in range(200)] + ["a", "b.c.d", "x-y_z"]
        for name in names:
            await pnc.publish(f"metrics.{name}", b"{}")
        await pnc.flush()
        deadline = time.monotonic() + 10
        while len(got) < len(names) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await sub.unsubscribe()
        expected = {f"metrics.~.{partition_of('metrics', n)}.{n}" for n in names}
        assert set(got) == expected

    def test_mapping_and_tail(self) -> None:
        """The mapping puts the partition behind `~`; strip_mark gives the name back."""
        assert server_mappings(("metrics",)) == {
            "metrics.>": "metrics.~.{{partition(64)}}.>"}
        assert strip_mark("~.17.cpu.usage") == "cpu.usage"
        assert strip_mark("cpu.usage") == "cpu.usage"


    def test_partition_lists_are_logged_as_ranges(self) -> None:
        """Runs of consecutive partitions as first-last, in order, duplicates once."""
        assert ranges(range(64)) == "0-63"
        assert ranges([43, 0, 1, 2, 5, 7, 8, 40, 42, 2]) == "0-2, 5, 7-8, 40, 42-43"
        assert ranges([]) == "none"


class TestSharing:
    """Engines started without --shard share the partitions and the samples."""

    async def test_two_engines_split_partitions_and_samples(self, pnc: Client, pnats: EmbeddedNats,
                                                            tmp_path: Path) -> None:
        """Two engines hold 32 partitions each and each decodes about half of the samples."""
        rules = rule_file(tmp_path / "r.yaml", rule("share-r", "share.x"))
        a = EngineProcess(pnats.url, [rules], coordinated=True).start()
        b = EngineProcess(pnats.url, [rules], coordinated=True).start()
        try:
            assert a.proc and b.proc
            await wait_engines(pnc, holding([a.proc.pid, b.proc.pid],
                                            {a.proc.pid: 32, b.proc.pid: 32}), "not 32 + 32")
            pub = Publisher(pnc)
            names = [f"share.n{i}" for i in range(400)]
            for round_ in range(10):
                for name in names:
                    await pub.sample(name, 1.0, time.time(), round=str(round_))
            await pub.close()
            total = len(names) * 10
            seen = await wait_engines(
                pnc, lambda s: sum(e.samples_received for e in s.values()) >= total,
                "samples not all received", timeout=30)
            shares = [e.samples_received / total for e in seen.values()]
            received = sum(e.samples_received for e in seen.values())
            assert total <= received <= total + 2  # each once (+ the second engine's probe)
            assert all(0.3 < share < 0.7 for share in shares), shares
        finally:
            a.stop_ok()
            b.stop_ok()


    async def test_stack_samples_go_to_their_partitions_engine(
            self, pnc: Client, pnats: EmbeddedNats, tmp_path: Path) -> None:
        """A stack rule is evaluated by the engine holding stacks.<source>'s partition only."""
        rules = tmp_path / "r.yaml"
        rules.write_text("rules:\n  - name: cst-hot\n"
                         "    stack: {source: cst, frame: 'hot', measure: share}\n"
                         "    when: '> 0.3'\n    for: 0s\n    actions: [log]\n")
        a, b = await start_two(pnc, pnats.url, rules)
        try:
            seen = await engines(pnc)
            holder = next(pid for pid, e in seen.items()
                          if partition_of("stacks", "cst") in e.partitions)
            sample = StackSample(source="cst", stacks=[Stack(["main", "hot"], 3.0)],
                                 ts=time.time())
            await pnc.publish("stacks.cst", encoder.encode(sample))
            await pnc.flush()
            await wait_rules(pnc, "cst-hot", 1)
            after = await wait_engines(pnc, lambda s: s[holder].samples_received >
                                       seen[holder].samples_received, "holder's count")
            by_pid = {e.pid: e for e in (a, b)}
            other_pid = next(pid for pid in by_pid if pid != holder)
            # the other engine never received it: the server routed it by partition
            assert after[other_pid].samples_received == seen[other_pid].samples_received
            assert len(trigger_lines(by_pid[holder], rule_prefix="cst-hot")) == 1
            assert not trigger_lines(by_pid[other_pid], rule_prefix="cst-hot")
        finally:
            a.stop_ok()
            b.stop_ok()


@pytest.fixture(params=["one node", "3-node cluster"])
async def takeover_bus(request: pytest.FixtureRequest,
                       pnats: EmbeddedNats) -> AsyncIterator[tuple[str, Client]]:
    """The server the engines share: the partitioned single node, or a real 3-node cluster
    (every URL given; unmapped, so each engine reads every sample and keeps its own)."""
    url = pnats.url if request.param == "one node" else ",".join(
        request.getfixturevalue("nats_cluster").urls)
    client = await bus.connect(NatsSettings(servers=url.split(","), name="flarebus-test"))
    yield url, client
    await client.close()


class TestTakeover:
    """A dead engine's partitions are taken over from its checkpoints."""

    async def test_kill9_pending_fire_once_firing_not_again(
            self, takeover_bus: tuple[str, Client], tmp_path: Path) -> None:
        """kill -9 one of two: every pending series fires once at its deadline, none re-fires.

        On one machine the dead process is known dead at once (``known_dead``); the
        frozen-engine test below covers the lease expiry of a lost machine. Run on one
        node and on a 3-node cluster."""
        url, pnc = takeover_bus
        fire = names_spread("ko.f", 12)
        pend = names_spread("ko.p", 12)
        rules = rule_file(tmp_path / "r.yaml",
                          *(rule(f"kof{i}", n, when="> 0") for i, n in enumerate(fire)),
                          *(rule(f"kop{i}", n, when="> 0", for_="12s")
                            for i, n in enumerate(pend)))
        a, b = await start_two(pnc, url, rules)
        try:
            assert a.proc and b.proc
            before = await engines(pnc)
            pub = Publisher(pnc)
            for name in fire:
                await pub.sample(name, 1.0, time.time())
            await pub.close()
            await wait_rules(pnc, "kof", len(fire))
            ts = await send_pending(pnc, pend)
            await asyncio.sleep(1.0)  # a few checkpoint rounds (every 0.2 s) store them
            held_by_a = set(before[a.proc.pid].partitions)
            assert any(partition_of("metrics", n) in held_by_a for n in pend)
            assert any(partition_of("metrics", n) in held_by_a for n in fire)
            a.kill9()
            killed_at = time.time()
            await wait_engines(pnc, holding([b.proc.pid]), "B did not take everything")
            got = await wait_rules(pnc, "kop", len(pend), timeout=TAKEOVER_WAIT)
            assert sorted(t.rule for t in got) == sorted(f"kop{i}" for i in range(len(pend)))
            assert {t.at for t in got} == {ts + 12}  # at the event-time deadline
            lateness = max(t.at for t in got) - killed_at  # deadline after the kill
            assert lateness < 12  # the deadline was still ahead when A died
            fired = await wait_rules(pnc, "kof", 0)
            assert Counter(t.id for t in fired) == Counter({t.id: 1 for t in fired})
            assert len(fired) == len(fire)
            # no engine even tried to fire a firing series again (the dedup window would hide it)
            assert len(trigger_lines(a, b, rule_prefix="kof")) == len(fire)
            assert len(trigger_lines(b, rule_prefix="kop")) + len(
                trigger_lines(a, rule_prefix="kop")) == len(pend)
        finally:
            a.stop()
            b.stop_ok()

    async def test_frozen_engine_expires_and_wakes_fenced(
            self, pnc: Client, pnats: EmbeddedNats, tmp_path: Path) -> None:
        """SIGSTOP (a lost machine: alive, silent): taken over after the TTL; woken, it fires
        nothing of what it lost, and every pending series fires once."""
        pend, rules = pending_rules(tmp_path, "fz.p", 12, "fzp", "10s")
        a, b = await start_two(pnc, pnats.url, rules)
        try:
            ts = await send_pending(pnc, pend)
            await asyncio.sleep(1.0)  # checkpointed (every 0.2 s)
            published_before = (await engines(pnc))[a.pid].triggers_published
            a.signal(signal.SIGSTOP)
            await wait_engines(pnc, holding([b.pid]), "B did not take over the frozen one",
                               timeout=TAKEOVER_WAIT)
            got = await wait_rules(pnc, "fzp", len(pend), timeout=TAKEOVER_WAIT)
            a.signal(signal.SIGCONT)
            a.wait_for_log(r"lost the lease of 32 partitions", timeout=20)
            after = await wait_engines(pnc, holding([a.pid, b.pid], halves(a, b)),
                                       "not shared again")
            assert {t.at for t in got} == {ts + 10}
            # woken, A's timers fired what it had lost (the log shows them), but the fence
            # kept every one of them off the stream: A published nothing more
            assert after[a.pid].triggers_published == published_before
            assert len(trigger_lines(b, rule_prefix="fzp")) == len(pend)
        finally:
            a.signal(signal.SIGCONT)
            a.stop_ok()
            b.stop_ok()

    async def test_woken_and_stopped_at_once_releases_quietly(
            self, pnc: Client, pnats: EmbeddedNats, tmp_path: Path) -> None:
        """SIGCONT then SIGTERM before it noticed its leases were taken: exit 0, and the
        leases it no longer holds are not reported as failures, one line per partition."""
        _, rules = pending_rules(tmp_path, "fq.p", 2, "fqp", "10s")
        a, b = await start_two(pnc, pnats.url, rules)
        try:
            a.signal(signal.SIGSTOP)
            await wait_engines(pnc, holding([b.pid]), "B did not take over the frozen one",
                               timeout=TAKEOVER_WAIT)
            a.signal(signal.SIGCONT)
            a.stop_ok()
            assert not [line for line in a.lines if "could not release" in line], a.lines[-20:]
        finally:
            a.signal(signal.SIGCONT)
            b.stop_ok()

    async def test_third_engine_rebalances_without_loss(
            self, pnc: Client, pnats: EmbeddedNats, tmp_path: Path) -> None:
        """A third engine takes a third of the partitions; pending series still fire once."""
        pend, rules = pending_rules(tmp_path, "rb.p", 16, "rbp", "8s")
        a, b = await start_two(pnc, pnats.url, rules)
        c = EngineProcess(pnats.url, [rules], coordinated=True)
        try:
            ts = await send_pending(pnc, pend)
            c.start()
            assert a.proc and b.proc and c.proc
            three = holding([a.proc.pid, b.proc.pid, c.proc.pid])
            await wait_engines(pnc, lambda s: three(s) and all(
                20 <= len(e.partitions) <= 22 for e in s.values()), "not rebalanced over three")
            got = await wait_rules(pnc, "rbp", len(pend), timeout=TAKEOVER_WAIT)
            assert sorted(t.rule for t in got) == sorted(f"rbp{i}" for i in range(len(pend)))
            assert {t.at for t in got} == {ts + 8}
            assert len(trigger_lines(a, b, c, rule_prefix="rbp")) == len(pend)
        finally:
            for e in (a, b, c):
                e.stop_ok()

    async def test_sigterm_hands_over_at_once(self, pnc: Client, pnats: EmbeddedNats,
                                              tmp_path: Path) -> None:
        """SIGTERM: the stopping engine checkpoints and releases; the other holds all at once."""
        pend, rules = pending_rules(tmp_path, "st.p", 12, "stp", "6s")
        a, b = await start_two(pnc, pnats.url, rules)
        try:
            ts = await send_pending(pnc, pend)
            a.stop_ok()
            a.wait_for_log(r"handed over 32 partitions")
            # released, not expired: B claims them within a balance round, well inside the TTL
            b.wait_for_log(r"claimed 32 partitions \(1 live engines\)", timeout=5.5)
            got = await wait_rules(pnc, "stp", len(pend), timeout=TAKEOVER_WAIT)
            assert {t.at for t in got} == {ts + 6}
            assert len(trigger_lines(a, b, rule_prefix="stp")) == len(pend)
        finally:
            a.stop()
            b.stop_ok()


class TestFence:
    """An engine that lost a partition's lease publishes nothing for it."""

    def test_fence_expires_and_revokes(self) -> None:
        """A grant is valid until its instant; a revoked partition is not held at all."""
        now = [100.0]
        fence = Fence(clock=lambda: now[0])
        fence.grant(3, 104.5)
        assert fence.valid(3)
        now[0] = 104.5
        assert fence.holds(3) and not fence.valid(3)
        fence.revoke([3])
        assert not fence.holds(3)

    async def test_taken_lease_stops_publishing(self, pnc: Client, pnats: EmbeddedNats,
                                                tmp_path: Path) -> None:
        """Another engine overwrites a lease: the holder drops it and fires nothing there."""
        name = names_spread("fe.p", 1)[0]
        rules = rule_file(tmp_path / "r.yaml", rule("fep", name, when="> 0", for_="4s"),
                          rule("fe-alive", "fe.alive", when="> 0"))
        a = EngineProcess(pnats.url, [rules], coordinated=True).start()
        try:
            assert a.proc
            await wait_engines(pnc, holding([a.proc.pid]), "not holding all")
            pub = Publisher(pnc)
            ts = time.time()
            await pub.sample(name, 1.0, ts)
            await pub.flush()
            await wait_engines(pnc, lambda s: sum(e.pending for e in s.values()) == 1,
                               "pending series not tracked")
            kv = await bus.engine_leases_bucket(pnc.jetstream(), ttl=6.0)
            partition = partition_of("metrics", name)
            await kv.put(f"p.{partition}", b'{"engine": "intruder", "epoch": 1}')
            a.wait_for_log(rf"lost the lease of 1 partitions {partition} ", timeout=10)
            await asyncio.sleep(max(0.0, ts + 4 + 2 - time.time()))  # past the deadline
            # the engine still runs and publishes for what it holds
            await pub.sample("fe.alive", 1.0, time.time())
            await pub.close()
            await wait_triggers(pnc, "triggers.fe-alive", 1)
            assert await stream_triggers(pnc, "triggers.fep") == []
            assert not trigger_lines(a, rule_prefix="fep ")
            await kv.delete(f"p.{partition}")
        finally:
            a.stop_ok()


class TestProcesses:
    """`flarebus engine --processes N` and `flarebus status` on coordinated engines."""

    async def test_processes_restart_and_status(self, pnc: Client, pnats: EmbeddedNats,
                                                tmp_path: Path) -> None:
        """Two child engines share the partitions, status lists both, a killed one comes back."""
        rules = rule_file(tmp_path / "r.yaml", rule("proc-r", "proc.x"))
        sup = EngineProcess(pnats.url, [rules], "--processes", "2", coordinated=True).start()
        try:
            assert sup.proc
            seen = await wait_engines(pnc, lambda s: len(s) == 2 and holding(list(s))(s),
                                      "two children not sharing")
            assert sup.proc.pid not in seen  # the supervisor evaluates nothing itself
            out = run_flarebus("status", "--nats", pnats.url, "--json")
            assert out.returncode == 0, out.stderr
            listed = [json.loads(line) for line in out.stdout.splitlines()]
            coordinated = [s for s in listed if s.get("partitions") is not None]
            assert sorted(s["pid"] for s in coordinated) == sorted(seen)
            assert sorted(p for s in coordinated for p in s["partitions"]) == list(range(64))
            text = run_flarebus("status", "--nats", pnats.url).stdout
            assert "coordinated engines: 2 live, 64 of 64 partitions held" in text
            assert text.count("  partitions: 32 (") == 2
            victim = min(seen)
            os.kill(victim, signal.SIGKILL)
            sup.wait_for_log(rf"process \d \(pid {victim}\) exited with code -9; restarting")
            back = await wait_engines(
                pnc, lambda s: len(s) == 2 and victim not in s and holding(list(s))(s),
                "the killed child was not replaced")
            assert len(set(back) - set(seen)) == 1
        finally:
            sup.stop_ok()
        await wait_engines(pnc, lambda s: not s, "children still registered after SIGTERM",
                           timeout=20)
