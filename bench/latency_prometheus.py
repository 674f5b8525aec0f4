"""Prometheus + Alertmanager on the same flips: common defaults, and tuned.

Both are the machine's binaries (Debian: ``apt-get install prometheus
prometheus-alertmanager``); without them the rows are skipped. Every process
listens on 127.0.0.1 (Alertmanager's gossip port is turned off) with its data
in a temporary directory.

*Common defaults* is what the shipped example config and the docs lead to:
scrape and evaluate every 15s, Alertmanager's default ``group_wait`` of 30s;
every other setting is left at its default. *Tuned* scrapes and evaluates
every second with ``group_wait: 0s``. One deviation, for both: ``group_by:
['...']`` (one group per alert), so that parallel trials do not join one
group and wait for each other's ``group_interval`` (5m) — a single alert in a
``group_by: [alertname]`` route sees exactly this.

The trials are split over a few Prometheus instances (each its own target and
a rule group of a random name), because an instance's scrape and evaluation
phases are fixed by hashes: one instance would measure one phase offset
between scraping and evaluating. Its flip -> sample step is the first scrape
of its target after the flip; -> fire is the alert's ``startsAt`` (the
evaluation that fired it).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from pathlib import Path

import httpx

from bench.latency_http import GAUGE, FlipTarget, Receiver, free_port
from bench.latency_trials import Children, Trial, collect, plan_flips, wait_notes

INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"


def binaries() -> tuple[str, str] | None:
    """(prometheus, alertmanager) from PATH, or None when either is missing."""
    prometheus = shutil.which("prometheus")
    alertmanager = shutil.which("alertmanager") or shutil.which("prometheus-alertmanager")
    return (prometheus, alertmanager) if prometheus and alertmanager else None


def alert_name(for_s: float) -> str:
    return f"LatencyFor{for_s:g}s".replace(".", "_")


def prom_duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def alertmanager_config(hook: str, group_wait: float | None) -> str:
    wait = f"\n  group_wait: {prom_duration(group_wait)}" if group_wait is not None else ""
    return (f"route:\n  receiver: hook\n  group_by: ['...']{wait}\n"
            f"receivers:\n  - name: hook\n    webhook_configs:\n"
            f"      - url: '{hook}'\n        send_resolved: false\n")


def prometheus_config(interval: float, target: str, rules: Path, alertmanager: str) -> str:
    return (f"global:\n  scrape_interval: {prom_duration(interval)}\n"
            f"  evaluation_interval: {prom_duration(interval)}\n"
            f"rule_files: ['{rules}']\n"
            f"alerting:\n  alertmanagers:\n    - static_configs:\n"
            f"        - targets: ['{alertmanager}']\n"
            f"scrape_configs:\n  - job_name: latency\n    static_configs:\n"
            f"      - targets: ['{target}']\n")


def rules_file(group: str, fors: list[float]) -> str:
    lines = ["groups:", f"  - name: {group}", "    rules:"]
    for for_s in fors:
        lines += [f"      - alert: {alert_name(for_s)}", f"        expr: {GAUGE} > 50",
                  f"        for: {prom_duration(for_s)}"]
    return "\n".join(lines) + "\n"


async def wait_ready(url: str, children: Children, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
        while True:
            children.check(name)
            try:
                if (await client.get(f"{url}/-/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready in {timeout:g}s:\n{children.log_tail(name)}")
            await asyncio.sleep(0.1)


async def run_prometheus(setup: str, tuned: bool, trials: list[str], fors: list[float],
                         rng: random.Random, receiver: Receiver, tmp: Path,
                         instances: int = 3) -> list[Trial]:
    """One row pair (each ``for``): Alertmanager, ``instances`` Prometheus, their targets."""
    found = binaries()
    assert found is not None
    prometheus, alertmanager = found
    interval = 1.0 if tuned else 15.0
    group_wait = 0.0 if tuned else 30.0
    path = setup.replace(" ", "-")
    children = Children(tmp)
    parts = [trials[k::instances] for k in range(min(instances, len(trials)))]
    targets = [FlipTarget(part) for part in parts]
    try:
        am_addr = f"127.0.0.1:{free_port()}"
        (tmp / "am.yml").write_text(alertmanager_config(
            f"{receiver.url}/{path}", group_wait if tuned else None))
        children.start("alertmanager", [
            alertmanager, f"--config.file={tmp / 'am.yml'}", f"--storage.path={tmp / 'am'}",
            f"--web.listen-address={am_addr}", "--cluster.listen-address="])
        await wait_ready(f"http://{am_addr}", children, "alertmanager")
        for k, target in enumerate(targets):
            rules = tmp / f"rules{k}.yml"
            rules.write_text(rules_file(f"latency-{rng.getrandbits(32):08x}", fors))
            config = tmp / f"prometheus{k}.yml"
            config.write_text(prometheus_config(interval, target.url.removeprefix("http://"),
                                                rules, am_addr))
            addr = f"127.0.0.1:{free_port()}"
            children.start(f"prometheus{k}", [
                prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / f'tsdb{k}'}",
                f"--web.listen-address={addr}"])
            await wait_ready(f"http://{addr}", children, f"prometheus{k}")
        # every target scraped once (below the threshold) before anything flips
        while not all(t.scrapes for t in targets):
            for k in range(len(targets)):
                children.check(f"prometheus{k}")
            await asyncio.sleep(0.1)
        window = max(2.0, interval)
        flips: dict[str, float] = {}
        start = time.time() + 0.5
        for target, part in zip(targets, parts, strict=True):
            planned = plan_flips(rng, part, start, window)
            target.flips.update(planned)
            flips |= planned
        deadline = max(flips.values()) + max(fors) + 3 * interval + group_wait + 15
        await wait_notes(receiver, path, map(alert_name, fors), flips, deadline)
    finally:
        children.stop()
        for target in targets:
            target.stop()
    owner = {trial: targets[k] for k, part in enumerate(parts) for trial in part}
    return collect(setup, path, {alert_name(f): f for f in fors}, flips, receiver,
                   lambda _, trial, note: (owner[trial].first_scrape_after(flips[trial]),
                                           note.fired if note else None))
