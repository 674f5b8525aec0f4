"""Engine test helpers: a real `flarebus engine` process, reading the triggers stream."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from flarebus import bus
from flarebus.engine.service.checkpoint import META_PREFIX, read_entries
from flarebus.events import Trigger, trigger_decoder
from flarebus.summary import SUMMARY_PREFIX, EngineSummary, summary_decoder
from tests.support import start_flarebus


class EngineProcess:
    """`flarebus engine` as a child process, its log lines collected as they come.

    A static shard (``--shard 0/1``) unless ``coordinated``: engines of different tests
    on the session's shared server must not share partitions (each would then hold
    half of the other's series); tests of coordination, and those on a server of
    their own, ask for the default, coordinated engine.
    """

    def __init__(self, nats_url: str, rules: list[str | Path], *extra: str,
                 checkpoint_interval: float = 0.2, coordinated: bool = False) -> None:
        shard = [] if coordinated or "--shard" in extra else ["--shard", "0/1"]
        self.args = ["-v", "engine", "--nats", nats_url, "--rules", *map(str, rules),
                     "--checkpoint-interval", str(checkpoint_interval), *shard, *extra]
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def start(self, timeout: float = 20.0) -> EngineProcess:
        self.lines = []
        self.proc = start_flarebus(*self.args)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_for_log(r"engine \S+ ready", timeout)
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10.0, *, after: int = 0) -> str:
        """The first log line (from index ``after``) matching ``pattern``; fails on timeout."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc is not None and self.proc.poll() is not None
                                 and not self._changed.wait(0.2)):
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n"
                                         + "\n".join(self.lines[-40:]))
                self._changed.wait(min(left, 0.2))

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop_ok(self) -> None:
        """SIGTERM; the engine must exit 0 (its log is shown if it does not)."""
        code = self.stop()
        assert code == 0, f"engine exited {code}; log:\n" + "\n".join(self.lines[-40:])


async def stream_triggers(nc: Client, subject: str = "triggers.*") -> list[Trigger]:
    """Every trigger stored in the stream on ``subject``, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(bus.TRIGGERS_STREAM)
    if not info.state.messages:
        return []
    sub = await js.pull_subscribe(subject, config=ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL, inactive_threshold=5.0))
    # as many as matched when the consumer was made: a fetch that times out is not "no more"
    # (on a loaded 3-node cluster the new consumer's first fetch took longer than 0.5 s)
    wanted = (await sub.consumer_info()).num_pending
    out: list[Trigger] = []
    deadline = time.monotonic() + 30
    while len(out) < wanted and time.monotonic() < deadline:
        try:
            msgs = await sub.fetch(min(1000, wanted - len(out)), timeout=2.0)
        except TimeoutError:  # nats-py's is one
            continue
        for m in msgs:
            out.append(trigger_decoder.decode(m.data))
            await m.ack()
    await sub.unsubscribe()
    return out


async def wait_triggers(nc: Client, subject: str, count: int,
                        timeout: float = 15.0) -> list[Trigger]:
    """Poll the stream until ``subject`` holds at least ``count`` triggers (fail on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await stream_triggers(nc, subject)
        if len(got) >= count:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(got)} of {count} triggers on {subject}: {got}")
        await asyncio.sleep(0.1)


async def summaries(nc: Client) -> dict[str, EngineSummary]:
    """The summaries the engines wrote, by shard (``"0/1"``)."""
    kv = await bus.engine_state_bucket(nc.jetstream())
    raw = await read_entries(kv, META_PREFIX + SUMMARY_PREFIX)
    decoded = (summary_decoder.decode(value) for value in raw.values())
    return {summary.shard: summary for summary in decoded}


async def wait_summary(nc: Client, check: Callable[[EngineSummary], bool],
                       timeout: float = 30.0) -> EngineSummary:
    """The engine's summary once ``check(summary)`` holds (fails with the last one seen):
    shard 0/1's, or the latest a coordinated engine (keyed by its engine id) wrote."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        found = await summaries(nc)
        last = found.get("0/1") or max(found.values(), key=lambda s: s.updated_at,
                                       default=None)
        if last is not None and check(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"summary never matched; last: {last}")
