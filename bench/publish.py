"""Publishing throughput: flarebus' Publisher, single and batched, against a bare nats-py loop.

Every figure is measured in the same run against the same embedded nats-server,
so the ratios hold on a noisy machine. A run counts the samples until
``nc.flush()`` returns, i.e. until the server has read them all. No subscriber
runs in this process: its backlog would bill one case's delivery to the next.

    python bench/publish.py [--samples 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.events import MetricSample, encoder
from flarebus.nats_server import EmbeddedNats
from flarebus.publish import Publisher


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


async def rate(nc: Client, fn: Callable[[Client, int], Awaitable[None]], n: int) -> float:
    start = time.perf_counter()
    await fn(nc, n)
    return n / (time.perf_counter() - start)


async def main(samples: int, rounds: int) -> None:
    cases = {"bare nats-py loop": bare_loop, "Publisher, single": publisher_single,
             "Publisher, batched": publisher_batched}
    with EmbeddedNats() as server:
        nc = await bus.connect(NatsSettings(servers=[server.url]), pending_size=64 * 1024 * 1024)
        await rate(nc, bare_loop, 10_000)  # warm up
        results: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):  # interleaved, so drift hits every case alike
            for name, fn in cases.items():
                results[name].append(await rate(nc, fn, samples))
        await nc.close()
    best = {name: statistics.median(values) for name, values in results.items()}
    base = best["bare nats-py loop"]
    single = best["Publisher, single"]
    print(f"samples per run: {samples:,}, rounds: {rounds} (median shown)")
    print(f"{'case':<22}{'samples/s':>14}{'vs bare':>10}")
    for name, value in best.items():
        print(f"{name:<22}{value:>14,.0f}{value / base:>10.2f}")
    print(f"batched / single: {best['Publisher, batched'] / single:.1f}x "
          "(goal >= 5x); single / bare: "
          f"{single / base:.2f} (goal >= 0.80)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.samples, args.rounds))
