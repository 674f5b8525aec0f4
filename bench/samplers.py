"""Benchmarks of the samplers: stack sampler overhead, and frame aggregation speed.

1. A CPU-bound program timed without and with the in-process stack sampler at
   100 Hz publishing to a real (embedded) nats-server, runs interleaved in the
   same process; the slowdown is the median-with over the median-without.
2. Stacks of depth 30 folded into a Frame tree, next to a plain dict count of
   the same stacks (the least any aggregation can do), in the same run.

    .venv/bin/python bench/samplers.py [--rounds 5] [--work 2.0] [--stacks 200000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# this file is bench/samplers.py: bench/ must not stand first on sys.path, or it shadows
# the samplers (and engine) packages
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from flarebus.nats_server import EmbeddedNats  # noqa: E402
from flarebus.samplers import stack  # noqa: E402
from flarebus.samplers.aggregate import Frame  # noqa: E402


def cpu_work(n: int) -> int:
    """A CPU-bound workload with some call depth, like a real program has."""
    def leaf(i: int) -> int:
        return (i * i) % 7

    def middle(k: int) -> int:
        return sum(leaf(i) for i in range(k, k + 50))

    total = 0
    for k in range(n):
        total += middle(k)
    return total


def calibrate(seconds: float) -> int:
    n = 1000
    while True:
        start = time.perf_counter()
        cpu_work(n)
        took = time.perf_counter() - start
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


def timed(n: int) -> tuple[float, float]:
    """Seconds of wall-clock time and of this process' CPU time (every thread, the sampler's
    too: what it costs, and what other work on a shared machine hardly moves)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    cpu_work(n)
    return time.perf_counter() - start, time.process_time() - start_cpu


def bench_overhead(rounds: int, work: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(tmp)
        server.start()
        try:
            n = calibrate(work)
            without: list[float] = []
            with_sampler: list[float] = []
            cpu_without: list[float] = []
            cpu_with: list[float] = []
            sampled = 0
            for _ in range(rounds):
                wall, cpu = timed(n)
                without.append(wall)
                cpu_without.append(cpu)
                profiler = stack.start(source="bench", nats=server.url, rate=100, interval=1.0)
                wall, cpu = timed(n)
                with_sampler.append(wall)
                cpu_with.append(cpu)
                sampled += profiler.samples_taken
                stack.stop()
        finally:
            server.stop()
    base, sampled_median = statistics.median(without), statistics.median(with_sampler)
    print("stack sampler overhead (CPU-bound program, 100 Hz, publishing to nats-server)")
    print(f"  without sampler: median {base:.3f}s  runs {', '.join(f'{t:.3f}' for t in without)}")
    print(f"  with sampler:    median {sampled_median:.3f}s  runs "
          f"{', '.join(f'{t:.3f}' for t in with_sampler)}")
    print(f"  snapshots taken: {sampled} ({sampled / sum(with_sampler):.1f}/s)")
    print(f"  slowdown: {100 * (sampled_median / base - 1):+.2f}%  (goal < 3%)")
    cpu_base, cpu_sampled = statistics.median(cpu_without), statistics.median(cpu_with)
    print(f"  CPU time: median {cpu_base:.3f}s without, {cpu_sampled:.3f}s with: "
          f"{100 * (cpu_sampled / cpu_base - 1):+.2f}%")


def make_stacks(count: int, depth: int = 30, seed: int = 1) -> list[tuple[str, ...]]:
    """Stacks like a service's: a shared trunk, a few hundred distinct paths below it."""
    rng = random.Random(seed)
    names = [f"module{i}.function{i}" for i in range(400)]
    paths = []
    for _ in range(300):
        trunk = [f"main.frame{d}" for d in range(rng.randint(5, 12))]
        paths.append(tuple(trunk + [rng.choice(names) for _ in range(depth - len(trunk))]))
    return [rng.choice(paths) for _ in range(count)]


def bench_aggregation(count: int) -> None:
    stacks = make_stacks(count)
    start = time.perf_counter()
    counts: Counter[tuple[str, ...]] = Counter()
    for s in stacks:
        counts[s] += 1
    baseline = time.perf_counter() - start

    start = time.perf_counter()
    tree = Frame()
    for s in stacks:
        tree.add(s, 1.0)
    folded = time.perf_counter() - start

    start = time.perf_counter()
    tree2 = Frame()
    for s, c in counts.items():
        tree2.add(s, float(c))
    precounted = time.perf_counter() - start
    assert tree == tree2 and tree.value == count
    print(f"frame aggregation ({count} stacks of depth 30, {len(counts)} distinct)")
    print(f"  dict count baseline:        {count / baseline:>12,.0f} stacks/s")
    print(f"  Frame.add per stack:        {count / folded:>12,.0f} stacks/s "
          f"({baseline / folded:.3f}x the baseline)")
    print(f"  dict count + fold distinct: {count / (baseline + precounted):>12,.0f} stacks/s "
          f"({baseline / (baseline + precounted):.3f}x the baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", type=float, default=2.0, help="seconds per timed run")
    parser.add_argument("--stacks", type=int, default=200_000)
    args = parser.parse_args()
    bench_overhead(args.rounds, args.work)
    bench_aggregation(args.stacks)


if __name__ == "__main__":
    main()
