"""Detection latency: from a gauge's flip above the threshold to the webhook notification.

Side by side on the same kind of flips (rule ``> 50``, ``for: 0s`` and ``for: 10s``):

- ``pushed``: flarebus, the value published with ``flarebus.Publisher`` at the flip;
- ``scraped``: flarebus scraping the target with the built-in ``prometheus``
  sampler every second;
- ``prometheus-defaults``: Prometheus + Alertmanager with common defaults
  (scrape 15s, evaluation 15s, group_wait 30s);
- ``prometheus-tuned``: the same tuned (1s, 1s, group_wait 0s).

flarebus runs as ``flarebus up`` (engine, worker and samplers in one process)
on an embedded nats-server, and notifies through the built-in ``http`` action;
one notification before the trials warms the worker up, as a running one is.
The Prometheus rows need the ``prometheus`` and ``alertmanager`` binaries
(``apt-get install prometheus prometheus-alertmanager``) and are skipped
without them. The trials of a setup run at once, each its own series with its
own random flip time (see bench/latency_trials.py); the setups run one after
the other, so they do not share the CPU. Every process is stopped at the end,
on Ctrl-C and on errors too.

    .venv/bin/python -m bench.latency                    # about 3 minutes
    .venv/bin/python -m bench.latency --only pushed --only scraped
    .venv/bin/python -m bench.latency --quick            # for 0s/1s, 3 trials
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from bench.latency_http import ABOVE, BELOW, GAUGE, FlipTarget, Receiver
from bench.latency_prometheus import INSTALL_HINT, binaries, run_prometheus
from bench.latency_trials import Children, Trial, collect, plan_flips, table, wait_notes
from flarebus import NatsSettings, Publisher, bus
from flarebus.durations import format_duration, parse_duration
from flarebus.events import trigger_decoder
from flarebus.nats_server import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {
    "pushed": "flarebus, value pushed with `Publisher`",
    "scraped": "flarebus, `prometheus` sampler every 1s",
    "prometheus-tuned": "Prometheus + Alertmanager tuned (1s, 1s, group_wait 0s)",
    "prometheus-defaults": "Prometheus + Alertmanager, common defaults "
                           "(scrape 15s, eval 15s, group_wait 30s)",
}
SCRAPE_INTERVAL = 1.0
WARMUP = "warmup"  # the trial label of the notification before the measured ones


def rule_name(for_s: float) -> str:
    return f"latency-for-{format_duration(for_s)}"


def write_rules(path: Path, metric: str, fors: list[float], hook: str) -> Path:
    lines = ["rules:"]
    for for_s in fors:
        lines += [f"  - name: {rule_name(for_s)}", f"    metric: {metric}",
                  '    when: "> 50"', f"    for: {format_duration(for_s)}",
                  f"    actions: [{{plugin: http, config: {{url: '{hook}'}}}}]"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_up(children: Children, url: str, rules: Path, config: Path | None) -> None:
    """``flarebus up`` against ``url``; returns once it says it started (its JSON lines)."""
    sampler = ["--config", str(config)] if config else ["--no-sampler"]
    proc = children.start("flarebus-up", [
        sys.executable, "-m", "flarebus", "up", "--json", "--nats", url, "--rules", str(rules),
        "--status-every", "0", *sampler], stdout=subprocess.PIPE, cwd=ROOT)
    started = threading.Event()

    def read(stdout: IO[bytes]) -> None:  # to its end, so the pipe never fills
        for line in stdout:
            with contextlib.suppress(ValueError):
                if json.loads(line).get("event") == "started":
                    started.set()

    assert proc.stdout is not None
    threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
    deadline = time.monotonic() + 60
    while not started.is_set():
        children.check("flarebus-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"flarebus up did not start:\n{children.log_tail('flarebus-up')}")
        await asyncio.sleep(0.05)


async def run_flarebus(setup: str, trials: list[str], fors: list[float], rng: random.Random,
                       receiver: Receiver, tmp: Path, window: float) -> list[Trial]:
    """The ``pushed`` or ``scraped`` rows: one engine + worker, every trial at once."""
    children = Children(tmp)
    server = EmbeddedNats(tmp / "nats")
    url = await asyncio.to_thread(server.start)
    target = FlipTarget([*trials, WARMUP]) if setup == "scraped" else None
    hook = f"{receiver.url}/{setup}"
    published: dict[tuple[str, str], float] = {}  # (rule, trial) -> trigger stored on the bus

    async def on_trigger(msg: Msg) -> None:
        # the instant JetStream stored it (the server's stamp), not when this process's loop
        # got to the message: that lags under load, and once came after the webhook's arrival
        trigger = trigger_decoder.decode(msg.data)
        if trigger.state == "firing":
            published.setdefault((trigger.rule, trigger.labels.get("trial", "")),
                                 msg.metadata.timestamp.timestamp())

    nc = None
    try:
        config = None
        if target is not None:
            config = tmp / "flarebus.yaml"
            config.write_text(f"samplers:\n  - sampler: prometheus\n"
                              f"    interval: {format_duration(SCRAPE_INTERVAL)}\n"
                              f"    config: {{url: '{target.metrics_url}'}}\n")
        await start_up(children, url, write_rules(tmp / "rules.yaml", GAUGE, fors, hook),
                       config)
        nc = await bus.connect(NatsSettings(servers=[url], name="bench-latency"))
        await nc.jetstream().subscribe(bus.TRIGGERS_FILTER, cb=on_trigger, ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.NEW)
        # batch=False: each sample goes out at once (batching would add its 5 ms linger)
        pub = Publisher(nc, batch=False)
        await warm_up(setup, target, pub, trials, rule_name(min(fors)), receiver, children)
        planned = plan_flips(rng, trials, time.time() + 0.2,
                             window if target is None else max(window, SCRAPE_INTERVAL))
        if target is not None:
            target.flips.update(planned)
            flips = planned
        else:
            flips = await push_flips(pub, planned)
        deadline = max(flips.values()) + max(fors) + 2 * SCRAPE_INTERVAL + 10
        await wait_notes(receiver, setup, map(rule_name, fors), flips, deadline)
    finally:
        if nc is not None:
            await nc.close()
        children.stop()
        await asyncio.to_thread(server.stop)
        if target is not None:
            target.stop()
    return collect(SETUPS[setup], setup, {rule_name(f): f for f in fors}, flips, receiver,
                   lambda rule, trial, note: (note.active_since if note else None,
                                              published.get((rule, trial))))


async def warm_up(setup: str, target: FlipTarget | None, pub: Publisher, trials: list[str],
                  rule: str, receiver: Receiver, children: Children) -> None:
    """Every series below the threshold, then one notification before the measured flips.

    The first trigger of an ``http`` action instance builds its HTTP client
    (tens of ms: httpx loads the CA bundle); a worker that has been running
    has done that, so the trials measure a warm one.
    """
    if target is not None:  # the target serves every trial below its flip from the start
        while not target.scrapes:
            children.check("flarebus-up")
            await asyncio.sleep(0.05)
        target.flips[WARMUP] = time.time()
    else:
        for trial in trials:
            await pub.sample(GAUGE, BELOW, trial=trial)
        await pub.sample(GAUGE, ABOVE, trial=WARMUP)
    await wait_notes(receiver, setup, [rule], [WARMUP], time.time() + 30)
    if receiver.get(setup, (rule, WARMUP)) is None:
        raise RuntimeError(f"{setup}: no warm-up notification in 30s:\n"
                           f"{children.log_tail('flarebus-up')}")


async def push_flips(pub: Publisher, planned: dict[str, float]) -> dict[str, float]:
    """Publish each series above the threshold at its planned time; the instants it did."""
    flips: dict[str, float] = {}

    async def flip(trial: str) -> None:
        await asyncio.sleep(max(0.0, planned[trial] - time.time()))
        flips[trial] = time.time()
        await pub.sample(GAUGE, ABOVE, trial=trial)

    await asyncio.gather(*(flip(t) for t in planned))
    return flips


async def main(args: argparse.Namespace) -> int:
    fors = [parse_duration(f) for f in args.for_]
    rng = random.Random(args.seed)
    trials = [str(i) for i in range(args.trials)]
    found = binaries()
    print(f"# detection latency, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"commit {commit()}, {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.2f}), "
          f"Python {platform.python_version()}")
    if found:
        print(f"# {version(found[0])}; {version(found[1])}")
    results: list[Trial] = []
    receiver = Receiver()
    try:
        for setup in args.only or list(SETUPS):
            if setup.startswith("prometheus") and not found:
                print(f"# {setup}: skipped, no prometheus/alertmanager binaries "
                      f"(to get them: {INSTALL_HINT})")
                continue
            print(f"# {setup}: {args.trials} trials ...", flush=True)
            began = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"latency-{setup}-") as tmp:
                if setup.startswith("prometheus"):
                    rows = await run_prometheus(SETUPS[setup], setup.endswith("tuned"),
                                                trials, fors, rng, receiver, Path(tmp),
                                                instances=args.instances)
                else:
                    rows = await run_flarebus(setup, trials, fors, rng, receiver, Path(tmp),
                                              args.window)
            results += rows
            print(f"#   done in {time.monotonic() - began:.0f}s", flush=True)
    finally:
        receiver.stop()
    if results:
        print()
        print(table(results))
    return 0 if all(t.notify is not None for t in results) else 1


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" (")[0] if first else binary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=None, help="trials per setup (10)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: for 0s and 1s, 3 trials unless --trials")
    parser.add_argument("--only", action="append", choices=list(SETUPS),
                        help="run only this setup; repeatable (default: all)")
    parser.add_argument("--for", dest="for_", action="append", metavar="DURATION",
                        help="the rules' `for`; repeatable (default: 0s and 10s)")
    parser.add_argument("--window", type=float, default=2.0,
                        help="flarebus setups: seconds over which the flips are spread (2; "
                             "at least the scrape interval when scraping)")
    parser.add_argument("--instances", type=int, default=3,
                        help="Prometheus instances the trials are split over (3)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the flip times")
    args = parser.parse_args(argv)
    args.trials = args.trials or (3 if args.quick else 10)
    args.for_ = args.for_ or (["0s", "1s"] if args.quick else ["0s", "10s"])
    if args.quick:
        args.window = min(args.window, 0.5)
    return args


def run() -> int:
    """Ctrl-C and SIGTERM end the run through the ``finally`` blocks that stop the children."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(main(parse_args()))
    except KeyboardInterrupt:
        print("interrupted; every process stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
