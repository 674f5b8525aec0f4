"""``bench/engine.py --profile FILE``: the batched ingest load as a flamegraph.

Kept apart from bench/engine.py (which only parses the flag) so the benchmark
stays readable; see docs/performance.md for what the profile showed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.engine import (
    METRICS,
    RULES_PER_METRIC,
    SERIES_PER_METRIC,
    EmbeddedNats,
    Engine,
    engine_config,
    engine_rate,
    write_rules,
)


async def profile(output: str, count: int, sampler: str) -> None:
    """The batched ingest load under flarebus's own stack sampling, as a flamegraph.

    ``sampler="in-process"``: the engine process samples itself
    (``flarebus.samplers.stack``; wall clock, every thread). ``"py-spy"``:
    ``flarebus sample stack --pid`` samples it from outside (on-CPU threads only,
    no GIL needed, so no bias towards calls that release it). Either publishes to
    a second nats-server on the side, so the profile's traffic never mixes with
    the measured load; ``flarebus flamegraph`` records it from there in a child
    process, and is stopped (SIGINT) once the load has been consumed.
    """
    from bench.publish import flarebus_argv
    from flarebus.samplers import stack

    spy: list[subprocess.Popen[str]] = []

    def start_sampling(side_url: str) -> None:
        if sampler == "py-spy":
            spy.append(subprocess.Popen(
                [*flarebus_argv(), "sample", "stack", "--pid", str(os.getpid()), "--source",
                 "bench-engine", "--window", "1", "--nats", side_url], text=True))
        else:
            stack.start(source="bench-engine", nats=side_url, interval=0.5)

    def stop_sampling() -> None:
        stack.stop()  # publishes the last interval
        for proc in spy:  # py-spy publishes whole windows: wait for the one under way
            time.sleep(1.5)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)

    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp) / "nats") as server, \
            EmbeddedNats(Path(tmp) / "side") as side:
        rules = write_rules(Path(tmp) / "rules.yaml", "bench")
        engine = Engine(engine_config(server.url), [rules])
        await engine.start()
        recorder = subprocess.Popen(
            [*flarebus_argv(), "flamegraph", "--nats", side.url, "--source", "bench-engine",
             "--seconds", "10m", "-o", output, "--title",
             f"flarebus engine, batched ingest ({sampler}): {count:,} samples, "
             f"{METRICS * RULES_PER_METRIC} rules, {METRICS * SERIES_PER_METRIC} series"],
            stderr=subprocess.PIPE, text=True)
        assert recorder.stderr is not None
        recorder.stderr.readline()  # "recording ...": it is subscribed
        try:
            rate, _ = await engine_rate(engine, server.url, "batched", count, "bench",
                                        on_go=lambda: start_sampling(side.url))
        finally:
            stop_sampling()
            await engine.stop()
            await asyncio.sleep(1.0)  # let the last stack sample reach the recorder
            recorder.send_signal(signal.SIGINT)
            _, err = recorder.communicate(timeout=60)
        print(f"engine, batched, sampled by {sampler}: {rate:,.0f} samples/s")
        print(err.strip())
