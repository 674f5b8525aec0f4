"""Coordinated engines: batched ingest with 1 and 2 engine processes, takeover after kill -9.

Part of bench/engine.py (sections 5 and 6; ``bench/engine.py --coordination``
runs only these). Everything is real: a partitioning embedded nats-server (as
``flarebus up`` starts it), ``flarebus engine --processes N`` as child
processes, a publisher process.

5. Batched ingest: the same 1000 rules and 10k series as section 2, published
   as messages of 100 samples; then one sentinel sample per partition, whose
   rule fires at once. An engine reads its partitions' subjects in order, so
   when every sentinel's trigger is in the stream every sample before it was
   decoded and evaluated: samples / (last sentinel trigger - first publish).
6. Takeover: two engines; kill -9 (or SIGSTOP) the one holding a probe
   metric's partition, then publish a probe sample (a rule firing at once)
   every 50 ms: the time from the signal to the first probe trigger is how long
   that partition went unserved. A kill -9 on the same machine is known dead at
   once; a stopped process is alive but silent, like a lost machine, so its
   leases expire after the TTL (the default 6 s). Median of ``rounds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import nats

from flarebus import bus
from flarebus.engine.service.coordinator import registry
from flarebus.events import MetricSample, encoder
from flarebus.nats_server import EmbeddedNats
from flarebus.partitions import PARTITIONS, partition_of

SENTINEL = "sentinel.p"


def spread(prefix: str) -> dict[int, str]:
    """A metric name in each partition: partition -> name."""
    names: dict[int, str] = {}
    i = 0
    while len(names) < PARTITIONS:
        names.setdefault(partition_of("metrics", f"{prefix}{i}"), f"{prefix}{i}")
        i += 1
    return names


def add_rules(rules: Path, names: dict[int, str], rule_prefix: str) -> Path:
    """``rules`` plus a rule firing at once on each of ``names``."""
    text = rules.read_text() + "".join(
        f"  - name: {rule_prefix}{p}\n    metric: {n}\n    when: \"> 0\"\n    for: 0s\n"
        f"    actions: [log]\n" for p, n in names.items())
    out = rules.with_name(f"{rule_prefix}{rules.name}")
    out.write_text(text)
    return out


def start_engines(url: str, rules: Path, processes: int) -> subprocess.Popen[bytes]:
    """``flarebus engine --processes N``; its log in ``engines.log`` beside the rules."""
    with (rules.parent / "engines.log").open("ab") as log:
        return _popen(url, rules, processes, log)


def _popen(url: str, rules: Path, processes: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flarebus", "engine", "--nats", url, "--rules", str(rules),
         "--processes", str(processes), "--checkpoint-interval", "5"],
        stdout=subprocess.DEVNULL, stderr=log,
        env={**os.environ, "FLAREBUS_ENGINE_PENDING_MSGS_LIMIT": "2000000"})


async def wait_balanced(nc: nats.NATS, count: int, timeout: float = 60.0) -> dict[int, list[int]]:
    """pid -> partitions once ``count`` engines hold all partitions between them."""
    kv = await bus.engine_leases_bucket(nc.jetstream(), ttl=6.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        engines, holders = await registry(kv)
        if len(engines) == count and len(holders) == PARTITIONS and \
                sum(len(e.partitions) for e in engines) == PARTITIONS:
            return {e.pid: e.partitions for e in engines}
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{count} engines did not share the partitions within {timeout}s")


async def triggered(nc: nats.NATS, rule_prefix: str) -> tuple[dict[str, float], asyncio.Event]:
    """A core subscription to the triggers: rule -> first arrival (perf_counter)."""
    seen: dict[str, float] = {}
    changed = asyncio.Event()

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        rule = msg.subject.split(".", 1)[1]
        if rule.startswith(rule_prefix):
            seen.setdefault(rule, time.perf_counter())
            changed.set()

    await nc.subscribe("triggers.*", cb=on_msg)
    await nc.flush()
    return seen, changed


async def ingest_rate(tmp: Path, rules: Path, processes: int, count: int,
                      publisher: list[str], round_: int) -> float:
    """Samples/s of ``processes`` coordinated engines on batched messages (see section 5)."""
    names = spread(SENTINEL)
    all_rules = add_rules(rules, names, "sentinel-")
    # a fresh server each time: stored states would keep the sentinels firing
    with EmbeddedNats(tmp / f"ingest-{processes}-{round_}", partitioned=True) as server:
        engines = start_engines(server.url, all_rules, processes)
        nc = await nats.connect(server.url)
        try:
            await wait_balanced(nc, processes)
            seen, changed = await triggered(nc, "sentinel-")
            proc = subprocess.Popen([*publisher, "--url", server.url, "--mode", "batched",
                                     "--count", str(count), "--base-ts", str(time.time()),
                                     "--prefix", "bench"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline().strip() == "ready"
            began = time.perf_counter()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            await asyncio.to_thread(proc.stdout.readline)  # "done": all published
            proc.wait()
            now = time.time()
            for name in names.values():
                await nc.publish(f"metrics.{name}", encoder.encode(MetricSample(name, 1.0, now)))
            await nc.flush()
            while len(seen) < len(names):
                changed.clear()
                await asyncio.wait_for(changed.wait(), 120)
            return count / (max(seen.values()) - began)
        finally:
            await nc.close()
            engines.send_signal(signal.SIGTERM)
            engines.wait(60)


async def takeover_time(tmp: Path, rules: Path, round_: int, sig: int) -> float:
    """Seconds from ``sig`` (SIGKILL, or SIGSTOP: a lost machine) to an engine to the first
    trigger from one of its partitions."""
    probe = spread("probe.m")[0]
    probe_rules = tmp / f"probe-{round_}.yaml"
    probe_rules.write_text(rules.read_text() + f"  - name: probe-r\n    metric: {probe}\n"
                           "    when: \"> 0\"\n    for: 0s\n    actions: [log]\n")
    with EmbeddedNats(tmp / f"takeover-{sig}-{round_}", partitioned=True) as server:
        a = start_engines(server.url, probe_rules, 1)
        nc = await nats.connect(server.url)
        b = None
        try:
            await wait_balanced(nc, 1)
            b = start_engines(server.url, probe_rules, 1)
            held = await wait_balanced(nc, 2)
            victim = next(pid for pid, parts in held.items() if 0 in parts)
            seen, _ = await triggered(nc, "probe-r")
            os.kill(victim, sig)
            killed = time.perf_counter()
            for proc in (a, b):  # reaped, as a supervisor or systemd would: not a zombie
                if sig == signal.SIGKILL and proc.pid == victim:
                    proc.wait()
            i = 0
            while not seen:
                i += 1
                await nc.publish(f"metrics.{probe}", encoder.encode(
                    MetricSample(probe, 1.0, time.time(), {"i": str(i)})))
                await asyncio.sleep(0.05)
                if time.perf_counter() - killed > 60:
                    raise RuntimeError("no takeover within 60 s")
            return seen["probe-r"] - killed
        finally:
            await nc.close()
            if sig == signal.SIGSTOP:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGCONT)
            for proc in (a, b):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)


async def report(write_rules: Callable[[Path, str], Path], publisher: list[str], *,
                 quick: bool) -> None:
    """Print sections 5 and 6 (``write_rules`` and ``publisher`` are bench/engine.py's)."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        await _report(tmp, write_rules(tmp / "rules.yaml", "bench"), publisher, quick=quick,
                      rounds=3 if quick else 5)


async def _report(tmp: Path, rules: Path, publisher: list[str], *, quick: bool,
                  rounds: int) -> None:
    # More than the server buffers for a client (64 MiB) in one burst and a lagging
    # engine is cut off as a slow consumer: 400k samples of 100 per message is ~40 MiB.
    count = 400_000
    load = os.getloadavg()
    print(f"6. batched ingest, coordinated engine processes on this host ({count} samples, "
          f"median of {rounds} rounds, {os.cpu_count()} cores, load average before "
          f"{load[0]:.2f}):")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for i in range(rounds):
        for n in (1, 2):
            rates[n].append(await ingest_rate(tmp, rules, n, count, publisher, i))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    shown = ", ".join(f"{b / a:.2f}" for a, b in zip(rates[1], rates[2], strict=True))
    print(f"   1 process  : {one:12,.0f} samples/s")
    print(f"   2 processes: {two:12,.0f} samples/s  x{two / one:.2f} [{shown}] "
          f"(goal >= 1.6; the publisher and nats-server share the same cores)")
    print(f"7. takeover of one of two engines' partitions ({rounds} rounds, lease TTL 6 s):")
    for sig, what in ((signal.SIGKILL, "kill -9 (same machine: known dead)"),
                      (signal.SIGSTOP, "SIGSTOP (a lost machine: the leases expire)")):
        times = [await takeover_time(tmp, rules, i, sig) for i in range(rounds)]
        print(f"   {what}: median {statistics.median(times):.2f} s  "
              f"[{', '.join(f'{t:.2f}' for t in times)}] (goal < 10 s)")
