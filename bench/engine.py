"""Engine benchmarks: ingest throughput, publish->trigger latency, restart time.

Every figure is printed next to a baseline measured in the same run, on the
same embedded nats-server:

1. ingest, single-sample messages: engine samples/s (1k rules, 10k series)
   vs a bare nats-py subscriber that only decodes the same messages (goal >= 0.7)
2. ingest, batched messages of 100 samples: engine samples/s (goal >= 250k/s)
   vs the bare batched decode (goal >= 0.6)
   (1 and 2: median of ``--rounds`` rounds, each bare then engine on a fresh server)
3. latency from publishing a crossing sample to the trigger's JetStream ack,
   at 5k samples/s background load: p50, p99 (goal p99 < 5 ms)
4. restart: engine start to resuming with 100k tracked series
5. durable ingest (``engine.ingest.mode: durable``) vs core ingest, single and
   batched messages: samples/s of each and the ratio durable/core (same server)
6. batched ingest with 1 and 2 coordinated engine processes (goal >= 1.6x)
7. takeover after kill -9 of one of two engines (median; goal < 10 s)
   (6 and 7: bench/coordination.py; ``--coordination`` runs only those)

The load comes from a separate publisher process (this file, ``--role publisher``)
so publishing does not share the measured event loop.

    .venv/bin/python bench/engine.py            # about a minute
    .venv/bin/python bench/engine.py --quick    # smaller, for a smoke run
    .venv/bin/python bench/engine.py --profile docs/profile-engine-batched.svg
                                                # the batched load's flamegraph
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/engine.py: its own directory must not shadow the `engine` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import nats  # noqa: E402

from flarebus.config import Config, EngineSettings, NatsSettings  # noqa: E402
from flarebus.engine.service.engine import Engine  # noqa: E402
from flarebus.events import MetricSample, Trigger, decode_metrics, encoder  # noqa: E402
from flarebus.ingest_settings import IngestSettings  # noqa: E402
from flarebus.nats_server import EmbeddedNats  # noqa: E402

METRICS = 250  # x 4 rules = 1000 rules
RULES_PER_METRIC = 4
SERIES_PER_METRIC = 40  # x 250 metrics = 10k series


# ------------------------------------------------------------------ publisher process

def build_messages(mode: str, count: int, base_ts: float, prefix: str) -> list[tuple[str, bytes]]:
    """``count`` samples over 10k series, values below every threshold, ts increasing."""
    out: list[tuple[str, bytes]] = []
    if mode == "single":
        for i in range(count):
            m, s = i % METRICS, (i // METRICS) % SERIES_PER_METRIC
            name = f"{prefix}{m}"
            sample = MetricSample(name, float(i % 50), base_ts + i * 1e-6, {"series": f"s{s}"})
            out.append((f"metrics.{name}", encoder.encode(sample)))
    else:
        per = 100
        for b in range(count // per):
            m = b % METRICS
            name = f"{prefix}{m}"
            batch = [MetricSample(name, float(j % 50), base_ts + (b * per + j) * 1e-6,
                                  {"series": f"s{j % SERIES_PER_METRIC}"}) for j in range(per)]
            out.append((f"metrics.{name}", encoder.encode(batch)))
    return out


async def publisher_role(args: argparse.Namespace) -> None:
    nc = await nats.connect(args.url, pending_size=64 * 1024 * 1024)
    if args.rate:  # background load: `rate` samples/s as batches of 50 every 10 ms
        end = time.monotonic() + args.duration
        tick = 0
        while time.monotonic() < end:
            now = time.time()
            batch = [MetricSample(f"{args.prefix}{(tick + j) % METRICS}", 10.0, now,
                                  {"series": f"s{j % SERIES_PER_METRIC}"})
                     for j in range(int(args.rate / 100))]
            for s in batch:
                await nc.publish(f"metrics.{s.name}", encoder.encode(s))
            tick += 1
            await asyncio.sleep(0.01)
        await nc.close()
        return
    messages = build_messages(args.mode, args.count, args.base_ts, args.prefix)
    print("ready", flush=True)
    sys.stdin.readline()
    for subject, payload in messages:
        await nc.publish(subject, payload)
    await nc.flush()
    print("done", flush=True)
    await nc.close()


def start_publisher(url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--role", "publisher", "--url", url,
                             *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# ------------------------------------------------------------------ measured side

def write_rules(path: Path, prefix: str) -> Path:
    lines = ["rules:"]
    for m in range(METRICS):
        for r in range(RULES_PER_METRIC):
            lines += [f"  - name: {prefix}-{m}-{r}", f"    metric: {prefix}{m}",
                      f"    when: \"> {100 + r}\"", "    for: 10s", "    actions: [log]"]
    lines += ["  - name: latency-probe", "    metric: latency.probe", "    when: \"> 100\"",
              "    for: 0s", "    actions: [log]"]
    path.write_text("\n".join(lines) + "\n")
    return path


#: Seconds without a new sample, once the publisher is done, after which the rest is lost.
QUIET_S = 3.0


async def run_load(url: str, mode: str, count: int, prefix: str,
                   received: callable,  # type: ignore[valid-type]
                   on_go: Callable[[], None] = lambda: None,
                   why: Callable[[], str] = lambda: "", *,
                   lossy: bool = False) -> tuple[float, float, int]:
    """Publish ``count`` samples from a child process; seconds until all were consumed.

    Also the seconds of this thread's CPU time meanwhile: the consumer (bare
    subscriber or engine) runs on it, the publisher in its own process, so
    ``count`` over it is the consumer's cost, which other work on a shared
    machine hardly moves (the polling below is kept sparse: it is billed too).
    And how many were consumed: all, or with ``lossy`` (durable ingest, where the
    server drops what its stream cannot take in) those that came before
    ``QUIET_S`` seconds without one, the times then up to the last one.
    """
    proc = start_publisher(url, "--mode", mode, "--count", str(count),
                           "--base-ts", str(time.time()), "--prefix", prefix)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "ready"
    on_go()
    start, start_cpu = time.perf_counter(), time.thread_time()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    seen, seen_at, seen_cpu = 0, start, start_cpu
    while (now := received()) < count:
        # 10 ms: each poll costs this thread's CPU time as well, and a loaded machine
        # stretches the wall-clock run (and so the polling) severalfold
        await asyncio.sleep(0.01)
        if now > seen:
            seen, seen_at, seen_cpu = now, time.perf_counter(), time.thread_time()
        elif proc.poll() is not None and time.perf_counter() - seen_at > QUIET_S and lossy:
            return seen_at - start, seen_cpu - start_cpu, seen
        if time.perf_counter() - start > 120:
            raise RuntimeError(f"only {received()} of {count} samples consumed{why()}")
    elapsed, cpu = time.perf_counter() - start, time.thread_time() - start_cpu
    proc.wait()
    return elapsed, cpu, count


async def bare_rate(url: str, mode: str, count: int, prefix: str) -> tuple[float, float]:
    """Samples/s of a nats-py subscriber that only decodes (wall clock, CPU time)."""
    nc = await nats.connect(url)
    seen = 0

    async def cb(msg: nats.aio.msg.Msg) -> None:
        nonlocal seen
        seen += len(decode_metrics(msg.data))

    await nc.subscribe("metrics.>", cb=cb, pending_msgs_limit=2_000_000,
                       pending_bytes_limit=1024 * 1024 * 1024)
    await nc.flush()
    elapsed, cpu, _ = await run_load(url, mode, count, prefix, lambda: seen)
    await nc.close()
    return count / elapsed, count / cpu


async def engine_rate(engine: Engine, url: str, mode: str, count: int, prefix: str,
                      on_go: Callable[[], None] = lambda: None, lost: list[int] | None = None
                      ) -> tuple[float, float]:
    """Samples/s of the engine (wall clock, CPU time); with ``lost``, losses are appended
    there (durable ingest: what the server dropped at its stream's ingest) instead of failing.
    """
    before = engine.stats.samples_received
    elapsed, cpu, consumed = await run_load(
        url, mode, count, prefix, lambda: engine.stats.samples_received - before, on_go,
        lambda: f"; engine dropped {dict(engine.stats.dropped)}", lossy=lost is not None)
    if lost is not None:
        lost.append(count - consumed)
    return consumed / elapsed, consumed / cpu


def evaluator_rate(rules: Path, count: int) -> float:
    """Samples/s of Evaluator.ingest alone on pre-decoded batches: the rules library's share."""
    from flarebus.engine.language.evaluator import Evaluator
    from flarebus.engine.language.rulefile import load_rules
    evaluator = Evaluator(load_rules([rules]))
    batches = [decode_metrics(p) for _, p in build_messages("batched", count, time.time(),
                                                             "bench")]
    began = time.perf_counter()
    for batch in batches:
        evaluator.ingest(batch, now=time.time())
    return count / (time.perf_counter() - began)


def decode_rate(count: int) -> float:
    payloads = [p for _, p in build_messages("batched", count, time.time(), "bench")]
    began = time.perf_counter()
    for payload in payloads:
        decode_metrics(payload)
    return count / (time.perf_counter() - began)


def engine_config(url: str, mode: Literal["core", "durable"] = "core") -> Config:
    return Config(nats=NatsSettings(servers=[url], name="bench-engine"),
                  engine=EngineSettings(checkpoint_interval=5.0,
                                        pending_msgs_limit=2_000_000,
                                        pending_bytes_limit=1024 * 1024 * 1024,
                                        ingest=IngestSettings(mode=mode)))


async def modes_round(tmp: Path, rules: Path, single_n: int, batched_n: int, lost: list[int]
                      ) -> tuple[float, float, float, float]:
    """(core single, core batched, durable single, durable batched) samples/s, one server.

    Core first: once the durable engine made the samples stream, the server would
    store the core run's messages too. The durable runs append to ``lost`` the
    samples nats-server dropped at the stream's ingest ("excessive stream ingest
    rate"): the publisher here outruns what the stream can store.
    """
    rates: list[float] = []
    with EmbeddedNats(tmp) as server:
        for mode in ("core", "durable"):
            engine = Engine(engine_config(server.url, mode), [rules])  # type: ignore[arg-type]
            await engine.start()
            losses = lost if mode == "durable" else None
            try:
                rates.append(await engine_rate(engine, server.url, "single", single_n, "bench",
                                               lost=losses))
                rates.append(await engine_rate(engine, server.url, "batched", batched_n,
                                               "bench", lost=losses))
            except RuntimeError as exc:
                raise RuntimeError(f"{mode}: {exc}; the server's log ends:\n"
                                   f"{server.log_tail()}") from None
            finally:
                await engine.stop()
    return rates[0], rates[1], rates[2], rates[3]


async def latency(engine: Engine, url: str, probes: int, acked: dict[str, float],
                  load_rate: int, arrived: asyncio.Event | None = None) -> list[float]:
    """ms from publishing a crossing sample to its trigger's JetStream ack, under load.

    With ``arrived`` (set by whoever fills ``acked``) the probe waits on it instead of
    polling: a busy-polling loop takes a core from the server and the load on 2 cores.
    """
    background = start_publisher(url, "--rate", str(load_rate), "--duration",
                                 str(probes * 0.02 + 5), "--prefix", "bg")
    nc = await nats.connect(url)
    await asyncio.sleep(1.0)  # let the background load settle
    results = []
    for i in range(probes):
        sent = time.perf_counter()
        await nc.publish("metrics.latency.probe", encoder.encode(
            MetricSample("latency.probe", 200.0, time.time(), {"probe": str(i)})))
        await nc.flush()
        while f"{i}" not in acked:
            if arrived is None:
                await asyncio.sleep(0)
            else:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 1.0)
            if time.perf_counter() - sent > 5:
                raise RuntimeError(f"probe {i} never acked")
        results.append((acked[f"{i}"] - sent) * 1000)
        await asyncio.sleep(0.01)
    await nc.close()
    background.terminate()
    background.wait()
    return results


async def restart(url: str, tmp: Path, series: int) -> tuple[float, float, int]:
    """Track ``series`` pending series, stop, start again: (checkpoint s, start s, keys restored).

    Only pending and firing series have state worth storing (an inactive one
    costs nothing to lose), so the series here are all pending: one rule per
    metric, ``for: 1h``.
    """
    rules = tmp / "restart.yaml"
    rules.write_text("rules:\n" + "".join(
        f"  - name: restart-{m}\n    metric: restart{m}\n    when: \"> 0\"\n    for: 1h\n"
        for m in range(METRICS)))
    config = engine_config(url)
    engine = Engine(config, [rules])
    await engine.start()
    nc = await nats.connect(url)
    now = time.time()
    per_metric = series // METRICS
    for m in range(METRICS):
        batch = [MetricSample(f"restart{m}", 1.0, now, {"series": f"r{k}"})
                 for k in range(per_metric)]
        for i in range(0, len(batch), 100):
            await nc.publish(f"metrics.restart{m}", encoder.encode(batch[i:i + 100]))
    await nc.flush()
    await nc.close()
    waited = time.perf_counter()
    while engine.stats.samples_received < series:
        await asyncio.sleep(0.01)
        if time.perf_counter() - waited > 120:
            raise RuntimeError(f"restart: only {engine.stats.samples_received} of {series} "
                               f"samples consumed; engine dropped {dict(engine.stats.dropped)}")
    tracked = engine.evaluator.series_count()
    began = time.perf_counter()
    await engine.stop()
    checkpoint_s = time.perf_counter() - began
    engine = Engine(config, [rules])
    began = time.perf_counter()
    await engine.start()
    start_s = time.perf_counter() - began
    keys = engine.restored_keys
    print(f"   tracked series before stop: {tracked}; tracked after restart: "
          f"{engine.evaluator.series_count()}, pending {engine.evaluator.stats().pending}")
    await engine.stop()
    return checkpoint_s, start_s, keys


Rates = tuple[float, float]  # samples/s of wall-clock time, of the consumer's CPU time


async def ingest_round(tmp: Path, rules: Path, single_n: int, batched_n: int
                       ) -> tuple[Rates, Rates, Rates, Rates]:
    """(bare single, bare batched, engine single, engine batched) samples/s on a fresh server.

    The bare subscriber runs before the engine subscribes (they would share the
    messages otherwise), so a round is one server, one engine, in that order.
    """
    with EmbeddedNats(tmp) as server:
        bare_single = await bare_rate(server.url, "single", single_n, "bench")
        bare_batched = await bare_rate(server.url, "batched", batched_n, "bench")
        engine = Engine(engine_config(server.url), [rules])
        await engine.start()
        try:
            eng_single = await engine_rate(engine, server.url, "single", single_n, "bench")
            eng_batched = await engine_rate(engine, server.url, "batched", batched_n, "bench")
        finally:
            await engine.stop()
    return bare_single, bare_batched, eng_single, eng_batched


def _ratios(rounds: list[tuple[Rates, Rates, Rates, Rates]], bare: int, eng: int,
            clock: int = 0) -> tuple[float, float, float, str]:
    """Median bare and engine rates, the median of the per-round ratios, and those ratios.

    ``clock`` 0: wall-clock rates; 1: per second of the consumer's CPU time.
    """
    ratios = [r[eng][clock] / r[bare][clock] for r in rounds]
    shown = ", ".join(f"{x:.2f}" for x in ratios)
    return (statistics.median(r[bare][clock] for r in rounds),
            statistics.median(r[eng][clock] for r in rounds), statistics.median(ratios), shown)


def _cpu_line(rounds: list[tuple[Rates, Rates, Rates, Rates]], bare: int, eng: int) -> str:
    bare_cpu, eng_cpu, ratio, shown = _ratios(rounds, bare, eng, 1)
    return (f"   per CPU-second      : bare {bare_cpu:,.0f}, engine {eng_cpu:,.0f} samples/s"
            f"  ratio {ratio:.2f} [{shown}]")


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    if args.coordination:
        await coordination(args)
        return
    single_n, batched_n = (50_000, 100_000) if args.quick else (200_000, 400_000)
    probes = 100 if args.quick else 500
    restart_series = 10_000 if args.quick else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        rules = write_rules(Path(tmp) / "rules.yaml", "bench")
        print(f"flarebus engine bench: {METRICS * RULES_PER_METRIC} rules, "
              f"{METRICS * SERIES_PER_METRIC} series; ingest: median of {args.rounds} "
              f"round(s), each on a fresh server (ratios per round in brackets)")
        rounds = [await ingest_round(Path(tmp) / f"round-{i}", rules, single_n, batched_n)
                  for i in range(args.rounds)]
        bare, eng, ratio, shown = _ratios(rounds, 0, 2)
        print(f"1. ingest, single-sample messages ({single_n}):")
        print(f"   bare nats-py decode : {bare:12,.0f} samples/s")
        print(f"   engine              : {eng:12,.0f} samples/s  "
              f"ratio {ratio:.2f} [{shown}] (goal >= 0.7)")
        print(_cpu_line(rounds, 0, 2))
        bare, eng, ratio, shown = _ratios(rounds, 1, 3)
        print(f"2. ingest, batched messages of 100 ({batched_n} samples):")
        print(f"   bare nats-py decode : {bare:12,.0f} samples/s")
        print(f"   engine              : {eng:12,.0f} samples/s  "
              f"ratio {ratio:.2f} [{shown}] (goal >= 0.6, >= 250,000/s)")
        print(_cpu_line(rounds, 1, 3))
        print(f"   (evaluator alone, no NATS, same batches: "
              f"{evaluator_rate(rules, batched_n):,.0f} samples/s; decode alone: "
              f"{decode_rate(batched_n):,.0f} samples/s)")
        with EmbeddedNats(Path(tmp) / "nats") as server:
            url = server.url
            acked: dict[str, float] = {}
            arrived = asyncio.Event()

            def on_acked(trigger: Trigger) -> None:
                if trigger.rule == "latency-probe":
                    acked[trigger.labels["probe"]] = time.perf_counter()
                    arrived.set()

            engine = Engine(engine_config(url), [rules], on_acked=on_acked)
            await engine.start()
            try:
                await engine_rate(engine, url, "batched", batched_n, "bench")  # the states
                lat = await latency(engine, url, probes, acked, 5000, arrived)
            finally:
                await engine.stop()
            lat.sort()
            p50 = statistics.median(lat)
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
            print(f"3. latency publish -> trigger JetStream ack, 5k samples/s background, "
                  f"{probes} probes:")
            print(f"   p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {lat[-1]:.2f} ms "
                  f"(goal p99 < 5 ms)")
            checkpoint_s, start_s, keys = await restart(url, Path(tmp), restart_series)
        print(f"4. restart with {restart_series} tracked series:")
        print(f"   final checkpoint on stop: {checkpoint_s:.2f} s; "
              f"start to resumed: {start_s:.2f} s ({keys} state keys restored)")
        lost: list[int] = []
        modes = [await modes_round(Path(tmp) / f"modes-{i}", rules, single_n, batched_n, lost)
                 for i in range(args.rounds)]
        print("5. durable ingest vs core ingest (median of rounds; durable/core per round):")
        if any(lost):
            sent = args.rounds * (single_n + batched_n)
            print(f"   (the server dropped {sum(lost):,} of {sent:,} samples at the stream's "
                  "ingest, the publisher outrunning it: the durable rates count those consumed)")
        for label, core_i, durable_i in (("single-sample", 0, 2), ("batched (100)", 1, 3)):
            core, durable, ratio, shown = _ratios(modes, core_i, durable_i)
            print(f"   {label:14}: core {core:10,.0f}/s  durable {durable:10,.0f}/s  "
                  f"ratio {ratio:.2f} [{shown}]")
    await coordination(args)


async def coordination(args: argparse.Namespace) -> None:
    from bench.coordination import report

    await report(write_rules, [sys.executable, __file__, "--role", "publisher"],
                 quick=args.quick)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller figures, faster")
    parser.add_argument("--coordination", action="store_true",
                        help="only sections 6 and 7 (coordinated engines)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="ingest rounds (medians shown; default 3)")
    parser.add_argument("--profile", metavar="FILE.svg",
                        help="instead: profile the batched ingest with flarebus's stack "
                             "sampler and write its flamegraph (.svg .html .folded .json)")
    parser.add_argument("--profile-with", choices=("in-process", "py-spy"), default="py-spy",
                        help="flarebus.samplers.stack in the engine (wall clock, all threads) "
                             "or `flarebus sample stack --pid` (py-spy: on-CPU; the default)")
    parser.add_argument("--profile-samples", type=int, default=2_000_000,
                        help="samples of batched load to profile (default 2,000,000; an engine "
                             "much slower than today's is cut off by the server as a slow "
                             "consumer: give fewer)")
    parser.add_argument("--role", default="bench", choices=("bench", "publisher"))
    parser.add_argument("--url")
    parser.add_argument("--mode", default="single")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--base-ts", type=float, default=0.0)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--rate", type=int, default=0)
    parser.add_argument("--duration", type=float, default=0.0)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.role == "publisher":
        asyncio.run(publisher_role(arguments))
    elif arguments.profile:
        from bench.engine_profile import profile

        asyncio.run(profile(arguments.profile, arguments.profile_samples,
                            arguments.profile_with))
    else:
        asyncio.run(main(arguments))
