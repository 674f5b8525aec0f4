"""flarebus on a real 3-node NATS cluster: replicated streams and buckets, and a node's kill -9.

Every client here is given all three URLs, as production clients must be, so
it fails over when the node it is connected to dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from flarebus import bus
from flarebus.config import JetStreamSettings, WorkerSettings
from flarebus.events import MetricSample, trigger_decoder
from tests.cluster_support import NatsCluster
from tests.engine_support import EngineProcess, stream_triggers
from tests.http_support import LoopbackServer
from tests.plugin_pkg.harness import consumer_idle, wait_until
from tests.support import ROOT, flarebus_cmd

pytestmark = pytest.mark.timeout(240)

REPLICATED = JetStreamSettings(replicas=3)
RULE = "cluster-load"
RULES = f"""rules:
  - name: {RULE}
    metric: load.level
    when: "> 0.5"
    actions: [http]
"""
CONSUMER = WorkerSettings().consumer
#: how long the receiver takes to answer: actions are always in flight when a node dies
ACTION_TIME = 0.05
ENGINE_NAME, WORKER_NAME = "cluster-engine", "cluster-worker"  # their connections, in /connz


class Receiver(LoopbackServer):
    """An HTTP endpoint for the http action: how many times each trigger id was POSTed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.counts[trigger_decoder.decode(body).id] += 1
                time.sleep(ACTION_TIME)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


@pytest.fixture
async def cluster_nc(nats_cluster: NatsCluster) -> AsyncIterator[Client]:
    """A connection with every URL of the cluster, to a cluster with no stream left over."""
    client = await bus.connect(nats_cluster.settings())
    js = client.jetstream()
    for name in await js.streams_info():
        await js.delete_stream(name.config.name)
    yield client
    await client.close()


@pytest.fixture
def replicated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Roles started from here on read FLAREBUS_JETSTREAM_REPLICAS=3, and engines a lease
    TTL above JetStream's leader election (4-9 s): a node's loss then never costs a
    coordinated engine its partitions (docs/operations.md, Production)."""
    monkeypatch.setenv("FLAREBUS_JETSTREAM_REPLICAS", "3")
    monkeypatch.setenv("FLAREBUS_ENGINE_LEASE_TTL", "15s")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(RULES)
    return path


class Worker:
    """A `flarebus worker` process, its output in a log file (shown when a test fails)."""

    def __init__(self, url: str, endpoint: str, log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                flarebus_cmd("worker", "--nats", url, "--nats-name", WORKER_NAME,
                             "--concurrency", "8"), cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1",
                     "HTTP_PLUGIN_ENDPOINT": endpoint, "FLAREBUS_WORKER_ACK_WAIT": "5s",
                     "FLAREBUS_WORKER_BACKOFF_INITIAL": "100ms"},
                stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    async def ready(self, js: JetStreamContext) -> None:
        async def pulling() -> bool:
            assert self.proc.poll() is None, f"worker exited\n{self.output()}"
            try:
                return (await js.consumer_info(bus.TRIGGERS_STREAM, CONSUMER)).num_waiting > 0
            except Exception:
                return False
        await wait_until(pulling, 30, what="the worker pulling")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def stream_peers(js: JetStreamContext, name: str) -> tuple[int, set[str]]:
    """A stream's configured replicas, and the servers holding it (leader and current peers)."""
    info = await js.stream_info(name)
    assert info.cluster is not None, f"{name} has no cluster info"
    peers = {p.name for p in info.cluster.replicas or [] if p.current}
    return info.config.num_replicas or 1, {info.cluster.leader or "?"} | peers


# --------------------------------------------------------------------------- replication


class TestReplicatedResources:
    async def test_roles_create_every_stream_and_bucket_on_three_servers(
            self, nats_cluster: NatsCluster, cluster_nc: Client, replicated_env: None,
            rules_file: Path, receiver: Receiver, tmp_path: Path) -> None:
        """Engine and worker with FLAREBUS_JETSTREAM_REPLICAS=3: every stream has 3 servers."""
        js = cluster_nc.jetstream()
        engine = EngineProcess(nats_cluster.url, [rules_file], coordinated=True).start()
        worker = Worker(nats_cluster.url, receiver.url, tmp_path / "worker.log")
        try:
            await worker.ready(js)
            names = {info.config.name for info in await js.streams_info()}
            assert {bus.TRIGGERS_STREAM, f"KV_{bus.ENGINE_STATE_BUCKET}",
                    f"KV_{bus.ACTIONS_DONE_BUCKET}"} <= names, names
            nodes = {nats_cluster.node_name(i) for i in range(3)}
            for name in sorted(n for n in names if n):
                replicas, servers = await stream_peers(js, name)
                assert (replicas, servers) == (3, nodes), name
        finally:
            worker.stop()
            engine.stop_ok()

    async def test_a_single_replica_stream_is_reported_and_raised_to_three(
            self, cluster_nc: Client, caplog: pytest.LogCaptureFixture) -> None:
        """An R1 triggers stream with a 1h max_age: both differences are logged, then updated."""
        js = cluster_nc.jetstream()
        await js.add_stream(StreamConfig(name=bus.TRIGGERS_STREAM, subjects=[bus.TRIGGERS_SUBJECTS],
                                         max_age=3600, num_replicas=1))
        with caplog.at_level(logging.WARNING, "flarebus.jetstream"):
            await bus.ensure_triggers_stream(js, REPLICATED)
        assert [r.getMessage() for r in caplog.records] == [
            f"stream {bus.TRIGGERS_STREAM}: replicas is 1, wanted 3; updating it",
            f"stream {bus.TRIGGERS_STREAM}: max_age is 3600, wanted 604800; updating it"]
        info = await js.stream_info(bus.TRIGGERS_STREAM)
        assert (info.config.num_replicas, info.config.max_age) == (3, 604800)

    async def test_a_single_replica_bucket_is_reported_and_raised_to_three(
            self, cluster_nc: Client, caplog: pytest.LogCaptureFixture) -> None:
        """A bucket made elsewhere with 1 replica and history 5 is brought to 3 and 1."""
        from nats.js.api import KeyValueConfig
        js = cluster_nc.jetstream()
        await js.create_key_value(KeyValueConfig(bucket=bus.ENGINE_STATE_BUCKET, history=5))
        with caplog.at_level(logging.WARNING, "flarebus.jetstream"):
            await bus.engine_state_bucket(js, REPLICATED)
        assert [r.getMessage() for r in caplog.records] == [
            f"bucket {bus.ENGINE_STATE_BUCKET}: replicas is 1, wanted 3; updating it",
            f"bucket {bus.ENGINE_STATE_BUCKET}: history is 5, wanted 1; updating it"]
        info = await js.stream_info(f"KV_{bus.ENGINE_STATE_BUCKET}")
        assert (info.config.num_replicas, info.config.max_msgs_per_subject) == (3, 1)

    async def test_a_reader_leaves_replicas_as_they_are(
            self, cluster_nc: Client, caplog: pytest.LogCaptureFixture) -> None:
        """`tail`/`status` connect without the cluster's config: an R3 stream stays R3, quietly."""
        js = cluster_nc.jetstream()
        await bus.ensure_triggers_stream(js, REPLICATED)
        with caplog.at_level(logging.WARNING, "flarebus.jetstream"):
            await bus.ensure_jetstream(cluster_nc)
            await bus.engine_state_bucket(js)
        assert caplog.records == []
        assert (await js.stream_info(bus.TRIGGERS_STREAM)).config.num_replicas == 3


# --------------------------------------------------------------------------- a node's kill -9

SERIES = 240
LOAD_TICKS = 90  # series start firing all along these ticks: before, during and after the outage
ACTIVE_TICKS = 5
TICK = 0.2
#: The node stays down 12s+: longer than JetStream takes to elect new stream leaders (its raft
#: election timeout is 4-9s), so the triggers must flow with the node gone, not only after.
KILL_AT, RESTART_AT = 15, 15 + 60


def load_tick(tick: int) -> bytes:
    """Every series' sample for one tick: series i is above 0.5 for 5 ticks from its start.

    Every series is sent every tick, so a sample lost on the way (core NATS is at most
    once, and a client reconnecting drops what it had in flight) is sent again by the
    next tick: the triggers expected stay exactly one firing and one resolved per series.
    """
    now = time.time()
    samples = []
    for i in range(SERIES):
        start = i * LOAD_TICKS // SERIES
        value = 1.0 if start <= tick < start + ACTIVE_TICKS else 0.0
        samples.append(MetricSample("load.level", value, now, {"series": f"s-{i}"}))
    return msgspec.json.encode(samples)


async def victim_node(cluster: NatsCluster, js: JetStreamContext, victim: str) -> int:
    """The node to kill: the triggers stream's leader, or the one the engine or worker uses."""
    if victim == "triggers-leader":
        info = (await js.stream_info(bus.TRIGGERS_STREAM)).cluster
        assert info is not None and info.leader is not None
        return cluster.index_of(info.leader)
    return cluster.serving(ENGINE_NAME if victim == "engine-node" else WORKER_NAME)


@pytest.mark.parametrize("victim", ["triggers-leader", "engine-node", "worker-node"])
async def test_kill_9_one_nats_node_under_load_loses_nothing_and_runs_nothing_twice(
        nats_cluster: NatsCluster, cluster_nc: Client, replicated_env: None, rules_file: Path,
        receiver: Receiver, tmp_path: Path, victim: str) -> None:
    """Samples -> engine -> R3 triggers -> worker -> HTTP, while a node (the stream's leader,
    or the engine's or the worker's server) is killed with SIGKILL and later restarted: every
    trigger is delivered once, no action runs twice."""
    js = cluster_nc.jetstream()
    engine = EngineProcess(nats_cluster.url, [rules_file], "--nats-name", ENGINE_NAME,
                           coordinated=True).start()
    worker = Worker(nats_cluster.url, receiver.url, tmp_path / "worker.log")
    restarted: asyncio.Task[None] | None = None
    killed = before_kill = during_outage = -1
    progress: list[int] = []
    try:
        await worker.ready(js)
        killed = await victim_node(nats_cluster, js, victim)
        last_tick = LOAD_TICKS + ACTIVE_TICKS + 10
        for tick in range(last_tick):
            if tick == KILL_AT:
                nats_cluster.kill(killed)
                before_kill = len(receiver.snapshot())
            if tick == RESTART_AT:
                during_outage = len(receiver.snapshot()) - before_kill
                restarted = asyncio.create_task(asyncio.to_thread(nats_cluster.restart, killed))
            await cluster_nc.publish("metrics.load.level", load_tick(tick))
            await asyncio.sleep(TICK)
            progress.append(len(receiver.snapshot()))
        assert restarted is not None
        await restarted
        assert during_outage > 0, (f"no trigger reached the action while node {killed} was "
                                   f"down; POSTs after each tick: {progress}")

        expected = 2 * SERIES

        def report() -> str:
            got = receiver.snapshot()
            return (f"{len(got)} of {expected} triggers POSTed, "
                    f"{sum(got.values()) - len(got)} extra runs\n"
                    f"--- worker\n{worker.output()}\n--- engine\n"
                    + "\n".join(engine.lines[-30:]))

        await wait_until(lambda: len(receiver.snapshot()) >= expected, 90,
                         what=f"{expected} triggers POSTed")
        await wait_until(lambda: consumer_idle(js, CONSUMER), 60, what="every trigger acked")
        triggers = await stream_triggers(cluster_nc, bus.trigger_subject(RULE))
        states = Counter(t.state for t in triggers)
        assert states == {"firing": SERIES, "resolved": SERIES}, \
            f"stream holds {states}, wanted {SERIES} of each\n{report()}"
        assert len({t.id for t in triggers}) == expected, "a trigger is in the stream twice"
        got = receiver.snapshot()
        twice = {i: n for i, n in got.items() if n > 1}
        assert set(got) == {t.id for t in triggers}, report()
        assert twice == {}, f"{len(twice)} actions ran more than once: {twice}\n{report()}"
        replicas, servers = await stream_peers(js, bus.TRIGGERS_STREAM)
        assert (replicas, len(servers)) == (3, 3), servers  # the restarted node caught up
    finally:
        if restarted is not None:
            await restarted
        elif killed >= 0 and killed not in nats_cluster.running():
            nats_cluster.restart(killed)
        worker.stop()
        engine.stop()
