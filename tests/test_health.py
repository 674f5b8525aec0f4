"""`flarebus health engine|worker`: the probes' command, exit 0 or 1 with one line saying why."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.engine.service.checkpoint import META_PREFIX, read_entries
from flarebus.nats_server import EmbeddedNats
from flarebus.summary import SUMMARY_PREFIX, EngineSummary, summary_encoder
from tests.engine_support import EngineProcess
from tests.plugin_pkg.harness import wait_until
from tests.support import ROOT, flarebus_cmd, run_flarebus

RULES = ROOT / "rules" / "examples"


def health(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flarebus("health", *args, "--nats", url, timeout=60)


def unhealthy_because(result: subprocess.CompletedProcess[str], role: str) -> str:
    """The reason of a failed probe, checked to be its only line."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"flarebus health {role}: unhealthy: "
    assert lines[0].startswith(prefix), lines[0]
    return lines[0][len(prefix):]


class TestNothingThere:
    async def test_a_server_with_nothing_fails_both_and_is_left_untouched(
            self, tmp_path: Path) -> None:
        """No triggers stream yet: both roles unhealthy, and the probe created nothing."""
        with EmbeddedNats(tmp_path / "nats") as server:
            for role in ("engine", "worker"):
                reason = unhealthy_because(health(server.url, role), role)
                assert reason.startswith(f"stream {bus.TRIGGERS_STREAM} does not exist"), reason
            nc = await bus.connect(NatsSettings(servers=[server.url]))
            try:
                assert await nc.jetstream().streams_info() == []
            finally:
                await nc.close()

    def test_no_server_is_one_line_and_exit_1(self) -> None:
        """Nothing listening: exit 1, one line naming the URL."""
        result = health("nats://127.0.0.1:1", "worker")
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "127.0.0.1:1" in result.stderr


class TestEngine:
    async def test_a_running_engine_is_healthy_and_a_killed_one_is_not(
            self, private_nats: EmbeddedNats) -> None:
        """Healthy while it runs; after kill -9 its summary ages past --max-age: unhealthy."""
        engine = EngineProcess(private_nats.url, [RULES]).start()
        try:
            result = health(private_nats.url, "engine")
            assert (result.returncode, result.stdout) == (0, "engine healthy\n"), result.stderr
        finally:
            engine.kill9()
        await wait_until(lambda: health(private_nats.url, "engine", "--max-age", "1s")
                         .returncode == 1, 30, what="the probe failing")
        reason = unhealthy_because(health(private_nats.url, "engine", "--max-age", "1s"),
                                   "engine")
        assert reason.startswith(f"no engine on {socket.gethostname()} reported in the last 1s"), \
            reason

    async def test_an_engine_elsewhere_counts_only_with_any_host(
            self, private_nats: EmbeddedNats, private_nc: Client) -> None:
        """A fresh summary from another host: unhealthy here, healthy with --any-host."""
        kv = await bus.engine_state_bucket(await bus.ensure_jetstream(private_nc))
        for earlier in await read_entries(kv, META_PREFIX + SUMMARY_PREFIX):  # other tests'
            await kv.delete(META_PREFIX + SUMMARY_PREFIX + earlier)
        now = time.time()
        other = EngineSummary(shard="5/6", host="elsewhere", pid=1, started_at=now,
                              updated_at=now + 3600, rule_files=[], rules=[], series=0,
                              pending=0, firing=0, states=[])
        key = f"{META_PREFIX}{SUMMARY_PREFIX}5-of-6"
        await kv.put(key, summary_encoder.encode(other))
        try:
            reason = unhealthy_because(health(private_nats.url, "engine"), "engine")
            assert "5/6 on elsewhere" in reason, reason
            assert health(private_nats.url, "engine", "--any-host").returncode == 0
        finally:
            await kv.delete(key)


class TestWorker:
    async def test_healthy_once_the_workers_consumer_exists(
            self, private_nats: EmbeddedNats, private_nc: Client, tmp_path: Path) -> None:
        """Before any worker: unhealthy, naming the consumer; with one running: healthy."""
        js = await bus.ensure_jetstream(private_nc)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(bus.TRIGGERS_STREAM, "flarebus-workers")
        reason = unhealthy_because(health(private_nats.url, "worker"), "worker")
        assert reason.startswith("consumer flarebus-workers does not exist"), reason
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(flarebus_cmd("worker", "--nats", private_nats.url), cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            await wait_until(lambda: health(private_nats.url, "worker").returncode == 0, 30,
                             what="the worker probe passing")
        finally:
            worker.terminate()
            worker.wait(30)
            log.close()
