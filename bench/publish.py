"""Publishing: the Publisher's throughput, and how fast the `flarebus` command starts.

Every figure is measured in the same run against the same embedded nats-server,
so the ratios hold on a noisy machine.

Throughput: the Publisher, single and batched, against a bare nats-py loop. A
run counts the samples until ``nc.flush()`` returns, i.e. until the server has
read them all. No subscriber runs in this process: its backlog would bill one
case's delivery to the next. Each case is also given per second of the event
loop thread's CPU time, which other work on a shared machine hardly moves.

Start-up: wall-clock medians of ``--runs`` runs, interleaved, of ``flarebus
--help``, ``flarebus publish`` to the embedded server end to end, ``flarebus
check`` and ``flarebus replay`` of the packaged rules, against ``python -c
pass`` (the interpreter's own start) in the same rounds. For ``publish`` also
the time from launching the process to the ``ts`` its sample carries. The
children may write bytecode caches (``PYTHONDONTWRITEBYTECODE`` is dropped), as
an installed wheel has them: compiling the sources would be measured otherwise.

    python -m bench.publish [--samples 200000] [--rounds 3] [--runs 20] [--only startup]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.events import MetricSample, decode_metrics, encoder
from flarebus.nats_server import EmbeddedNats
from flarebus.publish import Publisher
from flarebus.rules import default_rules_file

STARTUP_SUBJECT = "metrics.bench.startup"


async def bare_loop(nc: Client, n: int) -> None:
    """What a user would write by hand: build, encode and publish each sample."""
    for i in range(n):
        sample = MetricSample("bench.cpu", float(i), 1763762400.0 + i, {"host": "web-1"})
        await nc.publish("metrics.bench.cpu", encoder.encode(sample))
    await nc.flush()


async def publisher_single(nc: Client, n: int) -> None:
    pub = Publisher(nc, batch=False)
    for i in range(n):
        await pub.sample("bench.cpu", float(i), 1763762400.0 + i, host="web-1")
    await pub.close()


async def publisher_batched(nc: Client, n: int) -> None:
    pub = Publisher(nc)
    for i in range(n):
        await pub.sample("bench.cpu", float(i), 1763762400.0 + i, host="web-1")
    await pub.close()


async def rate(nc: Client, fn: Callable[[Client, int], Awaitable[None]], n: int
               ) -> tuple[float, float]:
    """Samples per second of wall-clock time, and per second of this thread's CPU time.

    The CPU figure is what publishing costs the caller's process (the event loop's
    thread: the Publisher, nats-py and the socket writes), and other work on the
    machine hardly moves it, where it moves the wall-clock figure by 2x.
    """
    start, start_cpu = time.perf_counter(), time.thread_time()
    await fn(nc, n)
    return n / (time.perf_counter() - start), n / (time.thread_time() - start_cpu)


async def throughput(server: EmbeddedNats, samples: int, rounds: int) -> None:
    cases = {"bare nats-py loop": bare_loop, "Publisher, single": publisher_single,
             "Publisher, batched": publisher_batched}
    nc = await bus.connect(NatsSettings(servers=[server.url]), pending_size=64 * 1024 * 1024)
    await rate(nc, bare_loop, 10_000)  # warm up
    results: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # interleaved, so drift hits every case alike
        for name, fn in cases.items():
            wall, on_cpu = await rate(nc, fn, samples)
            results[name].append(wall)
            cpu[name].append(on_cpu)
    await nc.close()
    best = {name: statistics.median(values) for name, values in results.items()}
    best_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    base, base_cpu = best["bare nats-py loop"], best_cpu["bare nats-py loop"]
    single, single_cpu = best["Publisher, single"], best_cpu["Publisher, single"]
    print(f"samples per run: {samples:,}, rounds: {rounds} (median shown)")
    print(f"{'case':<22}{'samples/s':>14}{'vs bare':>10}{'per CPU-s':>14}{'vs bare':>10}")
    for name, value in best.items():
        print(f"{name:<22}{value:>14,.0f}{value / base:>10.2f}"
              f"{best_cpu[name]:>14,.0f}{best_cpu[name] / base_cpu:>10.2f}")
    print(f"batched / single: {best['Publisher, batched'] / single:.1f}x "
          f"(CPU: {best_cpu['Publisher, batched'] / single_cpu:.1f}x; goal >= 5x); "
          f"single / bare: {single / base:.2f} (CPU: {single_cpu / base_cpu:.2f}; goal >= 0.9)")


def flarebus_argv() -> list[str]:
    """The console script beside this interpreter (what users run), else ``python -m flarebus``."""
    script = Path(sys.executable).with_name("flarebus")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "flarebus"]


async def run_once(argv: list[str], cwd: str) -> float:
    """Seconds from launching ``argv`` to its exit (which must be 0)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-500:]}")
    return elapsed


async def startup(server: EmbeddedNats, runs: int) -> None:
    cli = flarebus_argv()
    rules = str(default_rules_file())
    with tempfile.TemporaryDirectory() as cwd:  # no flarebus.yaml, no .flarebus/nats.url
        samples = Path(cwd) / "samples.jsonl"
        samples.write_text("".join(f'{{"name": "cpu.usage", "value": {v}, "ts": {t}}}\n'
                                   for t, v in enumerate([50, 95, 96, 97, 40] * 20)))
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "flarebus --help": [*cli, "--help"],
            "flarebus publish (end to end)": [*cli, "publish", "bench.startup", "1",
                                              "--nats", server.url],
            "flarebus check": [*cli, "check", rules],
            "flarebus replay": [*cli, "replay", "--rules", rules, str(samples)],
        }
        nc = await bus.connect(NatsSettings(servers=[server.url]))
        stamps: list[float] = []

        async def stamped(msg: Any) -> None:
            stamps.extend(s.ts for s in decode_metrics(msg.data) if s.ts is not None)

        await nc.subscribe(STARTUP_SUBJECT, cb=stamped)
        for argv in cases.values():  # warm-up: bytecode caches, the OS' file cache
            await run_once(argv, cwd)
        times: dict[str, list[float]] = {name: [] for name in cases}
        lags: list[float] = []
        for _ in range(runs):
            for name, argv in cases.items():
                launched = time.time()
                times[name].append(await run_once(argv, cwd))
                if "publish" in name:
                    await nc.flush()
                    lags.append(stamps[-1] - launched)
        await nc.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["python -c pass"]
    print(f"\nstart-up: median of {runs} runs each, interleaved ({' '.join(cli)})")
    print(f"{'command':<32}{'ms':>8}{'vs python':>11}{'+ms':>8}")
    for name, value in medians.items():
        print(f"{name:<32}{value * 1000:>8.1f}{value / base:>10.2f}x{(value - base) * 1000:>8.1f}")
    print(f"{'publish: launch -> sample ts':<32}{statistics.median(lags) * 1000:>8.1f}"
          "   (the moment the sample is stamped)")


async def main(samples: int, rounds: int, runs: int, only: str | None) -> None:
    with EmbeddedNats() as server:
        if only in (None, "throughput"):
            await throughput(server, samples, rounds)
        if only in (None, "startup"):
            await startup(server, runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20, help="runs of each start-up case")
    parser.add_argument("--only", choices=("throughput", "startup"))
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.rounds, args.runs, args.only))
