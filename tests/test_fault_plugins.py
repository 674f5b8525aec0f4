"""Fault suite: plugins that misbehave (raise, hang, sys.exit, leak a thread); the worker lives."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from nats.aio.client import Client

from flarebus import Action
from flarebus.actions.deadletter import ERROR_HEADER, TRIES_HEADER
from flarebus.config import PluginSettings
from flarebus.events import Trigger
from flarebus.nats_server import EmbeddedNats
from tests.plugin_pkg import harness
from tests.support import start_flarebus
from tests.test_worker import Recorder, dead_letters


class Exits(Action):
    """Calls sys.exit on every run: async (on the worker's loop) or sync (in its thread pool)."""

    def __init__(self, name: str, *, sync: bool) -> None:
        self.name = name  # type: ignore[misc]
        self.runs: Counter[str] = Counter()
        if sync:
            self.execute = self._execute_sync  # type: ignore[method-assign,assignment]

    async def execute(self, trigger: Trigger) -> None:
        self.runs[trigger.id] += 1
        sys.exit(3)

    def _execute_sync(self, trigger: Trigger) -> None:
        self.runs[trigger.id] += 1
        sys.exit(4)


class SyncHangs(Action):
    """A blocking plugin that never returns on its own (it can only be abandoned)."""

    name = "sync-hangs"

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.release = threading.Event()

    def execute(self, trigger: Trigger) -> None:  # type: ignore[override]
        self.runs[trigger.id] += 1
        self.release.wait(60)


class LeaksThread(Action):
    """Succeeds, leaving a non-daemon thread running behind it each time."""

    name = "leaks"

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.done: set[str] = set()

    async def execute(self, trigger: Trigger) -> None:
        thread = threading.Thread(target=self.stop.wait, args=(60,), name="leaked")
        thread.start()
        self.threads.append(thread)
        self.done.add(trigger.id)


class TestMisbehavingPlugins:
    """Whatever a plugin does, the worker goes on; its triggers are retried, then dead-lettered."""

    async def test_sys_exit_is_a_failure_not_the_end_of_the_worker(
            self, private_nc: Client) -> None:
        """sys.exit in an async and in a sync plugin: retried, dead-lettered; the worker lives."""
        js = await harness.fresh_stream(private_nc)
        dead = await dead_letters(private_nc, "exits")
        quits, sync_quits, healthy = Exits("quits", sync=False), Exits("sync-quits", sync=True), \
            Recorder()
        cfg = harness.settings(max_tries=2, backoff_initial=0.05, backoff_max=0.1)
        t1 = harness.trigger("exits", actions=["quits"])
        t2 = harness.trigger("exits", actions=["sync-quits"])
        after = harness.trigger("fine", actions=["rec"])
        async with harness.running_worker(private_nc, quits, sync_quits, healthy, worker=cfg):
            await harness.publish(js, [t1, t2])
            letters = await dead.wait_for(2, timeout=30)
            await harness.publish(js, [after])
            await harness.wait_until(lambda: after.id in healthy.done, what="one after the exits")
            await harness.wait_until(lambda: harness.consumer_idle(js, cfg.consumer),
                                     what="all acked")
        assert quits.runs[t1.id] == 2 and sync_quits.runs[t2.id] == 2, \
            (quits.runs, sync_quits.runs)
        errors = sorted(m.headers[ERROR_HEADER] for m in letters)
        assert all("sys.exit" in e for e in errors), errors
        assert {m.headers[TRIES_HEADER] for m in letters} == {"2"}

    async def test_a_blocking_plugin_that_never_returns_is_abandoned_then_dead_lettered(
            self, private_nc: Client) -> None:
        """A sync plugin stuck forever: each try times out, then a dead letter; worker lives."""
        js = await harness.fresh_stream(private_nc)
        dead = await dead_letters(private_nc, "stuck")
        stuck, healthy = SyncHangs(), Recorder()
        cfg = harness.settings(max_tries=2, backoff_initial=0.05, backoff_max=0.1)
        t = harness.trigger("stuck", actions=["sync-hangs"])
        after = harness.trigger("fine", actions=["rec"])
        try:
            async with harness.running_worker(
                    private_nc, stuck, healthy, worker=cfg,
                    plugin_settings={"sync-hangs": PluginSettings(timeout=0.3)}):
                await harness.publish(js, [t])
                (letter,) = await dead.wait_for(1, timeout=30)
                await harness.publish(js, [after])
                await harness.wait_until(lambda: after.id in healthy.done, what="one after it")
        finally:
            stuck.release.set()
        assert stuck.runs[t.id] == 2, stuck.runs
        assert "timed out after 0.3s" in letter.headers[ERROR_HEADER]

    async def test_a_leaked_thread_does_not_hold_the_worker(self, private_nc: Client) -> None:
        """A plugin leaving a thread behind: its triggers complete once each, the worker goes on."""
        js = await harness.fresh_stream(private_nc)
        leaks = LeaksThread()
        cfg = harness.settings()
        triggers = [harness.trigger("leaky", actions=["leaks"]) for _ in range(5)]
        try:
            async with harness.running_worker(private_nc, leaks, worker=cfg):
                await harness.publish(js, triggers)
                await harness.wait_until(lambda: len(leaks.done) == 5, what="all five")
                await harness.wait_until(lambda: harness.consumer_idle(js, cfg.consumer),
                                         what="all acked")
            alive = sum(t.is_alive() for t in leaks.threads)
            assert alive == 5, f"{alive} of 5 leaked threads alive (the test's premise)"
        finally:
            leaks.stop.set()
            deadline = time.monotonic() + 10
            for thread in leaks.threads:
                thread.join(max(0.0, deadline - time.monotonic()))


STUCK_PLUGIN = '''
import threading
import time

from flarebus import Action, Trigger


class Stuck(Action):
    name = "stuck"

    def execute(self, trigger: Trigger) -> None:
        threading.Thread(target=time.sleep, args=(3600,), name="leaked-by-stuck").start()
        time.sleep(3600)


plugin = Stuck()
'''


class TestWorkerProcessExit:
    """A real `flarebus worker`: threads a plugin left behind do not keep it from exiting."""

    async def test_sigterm_exits_0_despite_stuck_and_leaked_threads(
            self, private_nats: EmbeddedNats, private_nc: Client, tmp_path: Path) -> None:
        """A plugin stuck in a thread and one it leaked: SIGTERM still ends the worker, exit 0."""
        js = await harness.fresh_stream(private_nc)
        plugins = tmp_path / "plugins"
        plugins.mkdir()
        (plugins / "stuck.py").write_text(STUCK_PLUGIN)
        proc = start_flarebus(
            "worker", "--nats", private_nats.url, "--plugin-dir", str(plugins),
            env={"FLAREBUS_WORKER_TIMEOUT": "500ms", "FLAREBUS_WORKER_GRACE": "1s",
                 "FLAREBUS_WORKER_CONSUMER": "stuck-exit", "FLAREBUS_WORKER_MAX_TRIES": "2"})
        dead = await dead_letters(private_nc, "stuck-rule")
        try:
            await harness.publish(js, [harness.trigger("stuck-rule", actions=["stuck"])])
            await dead.wait_for(1, timeout=30)  # both tries timed out: two stuck threads
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        assert "still running, not waiting for them" in err and "leaked-by-stuck" in err, err
