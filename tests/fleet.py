"""Real `flarebus worker` processes of one test (the ``fleet`` fixture is in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from nats.js import JetStreamContext

from flarebus import bus
from tests.plugin_pkg.harness import PLUGINS, wait_until
from tests.support import ROOT, flarebus_cmd


class Fleet:
    """Worker processes of one test, their shared record file, and their logs."""

    def __init__(self, url: str, tmp: Path, consumer: str) -> None:
        self.url = url
        self.tmp = tmp
        self.consumer = consumer
        self.records = tmp / "records.jsonl"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *, concurrency: int = 4, grace: str = "3s",
              args: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = {**os.environ, "RECORD_FILE": str(self.records), "PYTHONUNBUFFERED": "1",
               "FLAREBUS_WORKER_CONSUMER": self.consumer, "FLAREBUS_WORKER_ACK_WAIT": "2s",
               "FLAREBUS_WORKER_BACKOFF_INITIAL": "50ms", "FLAREBUS_WORKER_GRACE": grace,
               "ACTION_PLUGIN": "recorder"}
        log = (self.tmp / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            flarebus_cmd("worker", "--nats", self.url, "--plugin-dir", str(PLUGINS),
                         "--concurrency", str(concurrency), *args),
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def log(self, index: int) -> str:
        return (self.tmp / f"worker-{index}.log").read_text()

    def events(self) -> list[dict[str, object]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines() if line]

    def ended(self) -> set[object]:
        return {e["id"] for e in self.events() if e["event"] == "end"}

    async def ready(self, js: JetStreamContext, workers: int) -> None:
        """Every worker has a pull request waiting: publishing now reaches all of them."""
        async def waiting() -> bool:
            try:
                info = await js.consumer_info(bus.TRIGGERS_STREAM, self.consumer)
            except Exception:
                return False
            return info.num_waiting >= workers
        await wait_until(waiting, 20, what=f"{workers} workers pulling")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
