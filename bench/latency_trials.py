"""Trials of the latency bench: random flip times, waiting for notifications, the table.

A setup runs all its trials at once: each trial is its own series (label
``trial``) with its own flip time drawn uniformly over a window at least one
scrape/evaluation cycle long, so the flips fall at random phases of the
cycles, and each series is its own alert instance, notified on its own. What
a trial measures is the time from its flip to its notification's arrival,
and, where the path reports them, the steps between: flip -> sample (the
sample's timestamp, or the first scrape after the flip), -> fire (the
trigger stored on the bus, by the server's stamp on it: its ``at`` is the
sample's event time, not when the engine got to it; Prometheus' ``startsAt``,
the evaluation that fired the alert), -> notify (arrival at the receiver).
The table shows the median with min-max of the whole path and the median of
each step (medians of steps need not add up to the median total).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.latency_http import Notification, Receiver
from flarebus.nats_server import die_with_parent


@dataclass(frozen=True)
class Trial:
    """One flip of one setup and one ``for``; None where the step was not observed."""

    setup: str
    for_s: float
    flip: float
    sample: float | None
    fire: float | None
    notify: float | None


def plan_flips(rng: random.Random, trials: list[str], start: float,
               window: float) -> dict[str, float]:
    """Each trial's flip instant: ``start`` plus a uniform draw over ``window`` seconds."""
    return {t: start + rng.uniform(0.0, window) for t in trials}


async def wait_notes(receiver: Receiver, path: str, names: Iterable[str], trials: Iterable[str],
                     deadline: float) -> None:
    """Until every (name, trial) was notified on ``path``, or the wall clock passes ``deadline``."""
    keys = [(name, trial) for name in names for trial in trials]
    while time.time() < deadline and not all(receiver.get(path, k) for k in keys):
        await asyncio.sleep(0.05)


Steps = Callable[[str, str, Notification | None], tuple[float | None, float | None]]


def collect(setup: str, path: str, alerts: dict[str, float], flips: dict[str, float],
            receiver: Receiver, steps: Steps) -> list[Trial]:
    """The trials of one setup: ``alerts`` maps an alert/rule name to its ``for`` seconds;
    ``steps(name, trial, notification)`` gives the (sample, fire) instants of a trial."""
    out = []
    for name, for_s in alerts.items():
        for trial, flip in flips.items():
            note = receiver.get(path, (name, trial))
            sample, fire = steps(name, trial, note)
            out.append(Trial(setup, for_s, flip, sample, fire, note.arrived if note else None))
    return out


DASH = "\u2013"  # an en dash, between min and max


def seconds(value: float) -> str:
    """To the millisecond, whatever the size: 10.004 shows what 10.0 would hide."""
    return f"{value:.3f}"


def _step(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{seconds(statistics.median(known))} s" if known else "-"


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def table(trials: list[Trial]) -> str:
    """The markdown table: a row per (setup, for), in the order the setups ran."""
    rows = ["| path to a webhook notification, rule `> 50` | for | trials "
            "| flip → notify, median (min\u2013max) | flip → sample | sample → fire "
            "| fire → notify |",
            "|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, float], list[Trial]] = {}
    for t in trials:
        groups.setdefault((t.setup, t.for_s), []).append(t)
    for (setup, for_s), group in groups.items():
        total = [t.notify - t.flip for t in group if t.notify is not None]
        count = f"{len(total)}" if len(total) == len(group) else f"{len(total)} of {len(group)}"
        whole = (f"{seconds(statistics.median(total))} s ({seconds(min(total))}{DASH}"
                 f"{seconds(max(total))})" if total else "no notification")
        rows.append(f"| {setup} | {for_s:g}s | {count} | {whole} "
                    f"| {_step([_diff(t.flip, t.sample) for t in group])} "
                    f"| {_step([_diff(t.sample, t.fire) for t in group])} "
                    f"| {_step([_diff(t.fire, t.notify) for t in group])} |")
    return "\n".join(rows)


#: proxy settings of the machine must not reroute loopback traffic of the children
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


class Children:
    """The processes a setup starts, each logging to a file; ``stop()`` ends every one.

    Each child gets SIGTERM if the bench dies (``PR_SET_PDEATHSIG``, as the
    embedded nats-server does), so even a killed bench leaves nothing running.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {k: v for k, v in os.environ.items()
                    if k.upper() not in PROXY_VARIABLES} | {"PYTHONUNBUFFERED": "1"}

    def start(self, name: str, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=kwargs.pop("stdout", log), stderr=log,
                                stdin=subprocess.DEVNULL, env=self.env,
                                preexec_fn=die_with_parent, **kwargs)
        log.close()
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self, name: str) -> None:
        """Raise with the log's tail if ``name`` has exited."""
        code = self.procs[name].poll()
        if code is not None:
            raise RuntimeError(f"{name} exited with {code}:\n{self.log_tail(name)}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
