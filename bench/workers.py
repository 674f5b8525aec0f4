"""Worker throughput: overhead against a bare nats-py pull loop, and scaling over processes.

Run: ``.venv/bin/python bench/workers.py`` (about 30-60 s; ``--help`` for sizes).

1. Overhead. N triggers are in the stream; a bare nats-py process (fetch a
   batch, ack each message) and then one ``flarebus worker`` process with a
   no-op action each consume all of them through a fresh durable consumer.
   Both are timed the same way, from the outside: the consumer's ack floor
   is polled from the first acknowledged message to the last. Goal: the
   worker reaches >= 0.6 of the bare loop.
2. Scale. An action that awaits 50 ms (I/O-like); 1, 2 and 4 worker
   processes share one consumer; M triggers published once all are pulling,
   timed from the first publish to the last ack. Goal: 4 workers >= 3.5x one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # not bench/: its engine.py would shadow the package

from nats.js import JetStreamContext  # noqa: E402

from flarebus import bus  # noqa: E402
from flarebus.config import NatsSettings  # noqa: E402
from flarebus.events import ActionRef, Trigger, encoder  # noqa: E402
from flarebus.nats_server import EmbeddedNats  # noqa: E402

PLUGINS = '''
import asyncio
from flarebus import Action

class Noop(Action):
    name = "noop"
    async def execute(self, trigger):
        pass

class Wait50(Action):
    name = "wait50"
    async def execute(self, trigger):
        await asyncio.sleep(0.05)

plugins = [Noop(), Wait50()]
'''

BARE = '''
import asyncio, sys
import nats
from nats.js.api import ConsumerConfig, AckPolicy

async def main(url, consumer, batch):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_consumer("FLAREBUS_TRIGGERS", ConsumerConfig(
        durable_name=consumer, ack_policy=AckPolicy.EXPLICIT, filter_subject="triggers.*"))
    sub = await js.pull_subscribe_bind(durable=consumer, stream="FLAREBUS_TRIGGERS")
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=5)
        except Exception:
            continue
        for msg in msgs:
            await msg.ack()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
'''


def make_trigger(i: int, plugin: str) -> Trigger:
    now = time.time()
    return Trigger(id=f"bench-{plugin}-{i}-{now}", rule="bench", state="firing",
                   severity="info", metric_name="bench.metric", value=float(i),
                   threshold="> 0", duration=0.0, labels={"i": str(i % 10)}, annotations={},
                   active_since=now, at=now,
                   # the worker is measured, not its rate limit (which would drop most)
                   actions=[ActionRef(plugin=plugin, rate_limit="none")])


async def publish(js: JetStreamContext, count: int, plugin: str) -> None:
    chunk = 500
    for start in range(0, count, chunk):
        await asyncio.gather(*(
            js.publish(bus.trigger_subject("bench"), encoder.encode(make_trigger(i, plugin)),
                       headers={bus.MSG_ID_HEADER: f"{plugin}-{i}-{time.time()}"})
            for i in range(start, min(start + chunk, count))))


async def acked(js: JetStreamContext, consumer: str) -> int:
    try:
        info = await js.consumer_info(bus.TRIGGERS_STREAM, consumer)
    except Exception:
        return 0
    return info.ack_floor.consumer_seq if info.ack_floor else 0


async def time_consumption(js: JetStreamContext, consumer: str, count: int,
                           timeout: float = 120) -> float:
    """Seconds from the first observed ack to all ``count`` acked, rate-corrected."""
    deadline = time.monotonic() + timeout
    first_at = first_n = None
    while time.monotonic() < deadline:
        n = await acked(js, consumer)
        now = time.perf_counter()
        if first_at is None and n > 0:
            first_at, first_n = now, n
        if n >= count and first_at is not None:
            done = count - (first_n or 0)
            return (now - first_at) * count / done if done else float("nan")
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{consumer}: only {await acked(js, consumer)} of {count} acked")


def worker_env(consumer: str, plugin_dir: str, concurrency: int, batch: int) -> dict[str, str]:
    return {**os.environ, "FLAREBUS_WORKER_CONSUMER": consumer, "PLUGIN_DIR": plugin_dir,
            "FLAREBUS_WORKER_CONCURRENCY": str(concurrency),
            "FLAREBUS_WORKER_BATCH": str(batch), "FLAREBUS_WORKER_ACK_WAIT": "30s"}


def start_worker(url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "flarebus", "worker", "--nats", url],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


async def overhead(url: str, js: JetStreamContext, plugin_dir: str, count: int,
                   concurrency: int, batch: int, round_: int) -> tuple[float, float]:
    """One round: the same N messages consumed by the bare loop, then by the worker."""
    await js.purge_stream(bus.TRIGGERS_STREAM)
    await publish(js, count, "noop")
    bare = subprocess.Popen([sys.executable, "-c", BARE, url, f"bare{round_}", str(batch)],
                            cwd=ROOT)
    try:
        bare_s = await time_consumption(js, f"bare{round_}", count)
    finally:
        stop([bare])
    consumer = f"overhead{round_}"
    worker = start_worker(url, worker_env(consumer, plugin_dir, concurrency, batch))
    try:
        worker_s = await time_consumption(js, consumer, count)
    finally:
        stop([worker])
    return count / bare_s, count / worker_s


async def scale(url: str, js: JetStreamContext, plugin_dir: str, count: int, workers: int,
                concurrency: int, batch: int) -> float:
    await js.purge_stream(bus.TRIGGERS_STREAM)
    consumer = f"scale{workers}"
    env = worker_env(consumer, plugin_dir, concurrency, batch)
    procs = [start_worker(url, env) for _ in range(workers)]
    try:
        while True:  # all pulling before the clock starts
            try:
                info = await js.consumer_info(bus.TRIGGERS_STREAM, consumer)
                if info.num_waiting >= workers:
                    break
            except Exception:
                pass
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        await publish(js, count, "wait50")
        while await acked(js, consumer) < count:
            await asyncio.sleep(0.01)
        return count / (time.perf_counter() - started)
    finally:
        stop(procs)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as server:
        plugin_dir = Path(tmp) / "plugins"
        plugin_dir.mkdir()
        (plugin_dir / "bench_plugins.py").write_text(textwrap.dedent(PLUGINS))
        nc = await bus.connect(NatsSettings(servers=[server.url]))
        js = await bus.ensure_jetstream(nc)
        print(f"machine: {os.cpu_count()} CPUs; nats-server {server.url}")
        print(f"\n1. overhead: {args.count} triggers, no-op action, "
              f"concurrency {args.concurrency}, batch {args.batch}")
        rounds = []
        for r in range(args.rounds):  # alternating, so a noisy neighbour hits both alike
            bare_r, worker_r = await overhead(server.url, js, str(plugin_dir), args.count,
                                              args.concurrency, args.batch, r)
            rounds.append((bare_r, worker_r))
            print(f"   round {r + 1}: bare {bare_r:8.0f}/s  worker {worker_r:8.0f}/s  "
                  f"ratio {worker_r / bare_r:.2f}")
        bare = max(b for b, _ in rounds)
        worker = max(w for _, w in rounds)
        print("   best of rounds:")
        print(f"   bare nats-py fetch+ack loop : {bare:10.0f} msgs/s")
        print(f"   flarebus worker (1 process) : {worker:10.0f} triggers/s")
        print(f"   ratio worker/bare           : {worker / bare:10.2f}   (goal >= 0.60)")
        print(f"\n2. scale: {args.scale_count} triggers, action awaits 50 ms, "
              f"concurrency {args.concurrency} per worker")
        rates = {}
        for n in (1, 2, 4):
            rates[n] = await scale(server.url, js, str(plugin_dir), args.scale_count, n,
                                   args.concurrency, args.batch)
            print(f"   {n} worker(s): {rates[n]:8.0f} triggers/s   "
                  f"{rates[n] / rates[1]:5.2f}x of one")
        print(f"   4 workers / 1 worker: {rates[4] / rates[1]:.2f}x   (goal >= 3.5x)")
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=15000, help="overhead triggers")
    parser.add_argument("--rounds", type=int, default=2, help="overhead rounds (alternating)")
    parser.add_argument("--scale-count", type=int, default=1600, help="scale triggers per run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    asyncio.run(main(parser.parse_args()))
