"""Staleness side by side: a firing alert's series vanishes from the target; when is it resolved?

One target serves ``stale_gauge{trial="N"} 9`` for every trial; Prometheus
(``prometheus`` on PATH, scrape and evaluation every second, rule
``stale_gauge > 5``) and flarebus (``flarebus engine`` on an embedded
nats-server, the ``prometheus`` sampler every second) both see them firing.
Then each series vanishes at its own random instant, and the bench reports, per
side, the time from vanishing to resolved: for Prometheus when the alert leaves
``/api/v1/alerts`` (polled every 20 ms), for flarebus the resolved trigger's
``at``. Without staleness markers flarebus kept them firing for
``missing.after`` (5 minutes).

    .venv/bin/python -m bench.staleness [--trials 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from bench.latency_http import free_port, send_exposition
from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.nats_server import EmbeddedNats
from flarebus.publish import Publisher
from flarebus.samplers.prometheus import PrometheusSampler
from flarebus.samplers.runtime import SamplerRunner
from tests.engine_support import EngineProcess, stream_triggers
from tests.http_support import LoopbackServer

RULE = "stale-hot"


class Target(LoopbackServer):
    """Serves every trial's series until its vanishing instant (``gone``)."""

    def __init__(self, trials: list[str]) -> None:
        self.trials = trials
        self.gone: dict[str, float] = {}
        super().__init__(_Handler)

    def exposition(self, now: float) -> bytes:
        return "".join(f'stale_gauge{{trial="{t}"}} 9\n' for t in self.trials
                       if now < self.gone.get(t, float("inf"))).encode()


class _Handler(BaseHTTPRequestHandler):
    server: Target

    def do_GET(self) -> None:
        send_exposition(self, self.server.exposition(time.time()))

    def log_message(self, *args: object) -> None:
        pass


def write_configs(tmp: Path, target: Target) -> tuple[Path, Path]:
    """Prometheus' config (with its rule file) and flarebus' rule file."""
    (tmp / "rules.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: Hot\n"
                                   "        expr: stale_gauge > 5\n")
    prom = tmp / "prometheus.yml"
    prom.write_text(f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    f"rule_files: ['{tmp / 'rules.yml'}']\n"
                    f"scrape_configs:\n  - job_name: t\n    static_configs:\n"
                    f"      - targets: ['{target.url.removeprefix('http://')}']\n")
    rules = tmp / "flarebus.yaml"
    rules.write_text(f"rules:\n  - {{name: {RULE}, metric: stale_gauge, when: '> 5', "
                     "actions: [log]}\n")
    return prom, rules


async def firing(client: httpx.AsyncClient, api: str) -> set[str]:
    """The trials Prometheus has firing now (none while it is not answering yet)."""
    try:
        alerts = (await client.get(f"{api}/api/v1/alerts")).json()["data"]["alerts"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {a["labels"]["trial"] for a in alerts if a["state"] == "firing"}


async def measure(trials: list[str], prometheus: str, tmp: Path) -> tuple[list[float],
                                                                          list[float]]:
    """Seconds from vanishing to resolved for each trial: (Prometheus, flarebus)."""
    target = Target(trials)
    prom_config, rules = write_configs(tmp, target)
    api = f"http://127.0.0.1:{free_port()}"
    prom = subprocess.Popen([prometheus, f"--config.file={prom_config}",
                             f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address={api.removeprefix('http://')}"],
                            stderr=subprocess.DEVNULL)
    resolved: dict[str, float] = {}
    with EmbeddedNats(tmp / "nats") as server:
        engine = EngineProcess(server.url, [rules]).start()
        nc = await bus.connect(NatsSettings(servers=[server.url]))
        runner = SamplerRunner(Publisher(nc))
        runner.add(PrometheusSampler(), {"url": f"{target.url}/metrics"}, interval=1.0)
        await runner.start()
        try:
            async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
                while await firing(client, api) != set(trials):
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.0)  # flarebus fires at its first scrape: long since
                rng = random.Random(5)
                start = time.time() + 0.5
                target.gone = {t: start + rng.random() * 2.0 for t in trials}
                while len(resolved) < len(trials) and time.time() < start + 60:
                    still, now = await firing(client, api), time.time()
                    resolved |= {t: now for t in trials
                                 if t not in resolved and now >= target.gone[t] and t not in still}
                    await asyncio.sleep(0.02)
            await asyncio.sleep(2.0)
            triggers = await stream_triggers(nc, f"triggers.{RULE}")
        finally:
            await runner.stop()
            await nc.close()
            engine.stop()
            prom.terminate()
            prom.wait()
            target.stop()
    ours = {t.labels["trial"]: t.at for t in triggers if t.state == "resolved"}
    return ([resolved[t] - target.gone[t] for t in trials if t in resolved],
            [ours[t] - target.gone[t] for t in trials if t in ours])


def show(side: str, delays: list[float], trials: int) -> str:
    if not delays:
        return f"{side}: nothing resolved within a minute"
    return (f"{side}: median {statistics.median(delays):.3f} s ({min(delays):.3f}-"
            f"{max(delays):.3f}), {len(delays)} of {trials} resolved")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="series vanishing (default 8)")
    args = parser.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("prometheus is not on PATH (Debian: apt-get install prometheus)")
        return 1
    trials = [f"t{i}" for i in range(args.trials)]
    with tempfile.TemporaryDirectory() as tmp:
        prom, ours = asyncio.run(measure(trials, prometheus, Path(tmp)))
    print("vanished -> resolved, scrape every 1s (Prometheus also evaluating every 1s):")
    print(show("  Prometheus (alert gone from /api/v1/alerts)", prom, len(trials)))
    print(show("  flarebus   (resolved trigger's at)          ", ours, len(trials)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
