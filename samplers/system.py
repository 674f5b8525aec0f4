"""``system`` and ``process``: this host's or one process's vital signs, via psutil.

``system`` publishes (label ``host``) ``system.cpu.percent``, ``system.memory.percent``,
``system.memory.used_bytes``, ``system.memory.available_bytes``, ``system.swap.percent``,
``system.load1/5/15``, ``system.disk.percent`` (per ``mount``), ``system.disk.read_bytes_per_s``,
``system.disk.write_bytes_per_s``, ``system.net.recv_bytes_per_s``,
``system.net.sent_bytes_per_s``, and the heartbeat ``flarebus.heartbeat`` = 1 every
interval (the default rules' absence check watches it).

``process`` (config ``pid``, default: the sampler's own process) publishes
``process.cpu.percent``, ``process.memory.rss_bytes``, ``process.memory.percent``,
``process.threads``, ``process.open_files``, ``process.fds``, and
``process.io.read_bytes_per_s``/``write_bytes_per_s`` where the OS allows,
with labels ``host``, ``pid`` and ``process`` (its name).

Rates are per second between two collections; the first collection has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import psutil

from flarebus.events import MetricSample
from flarebus.sampler import Sample, Sampler, gauge


class Rates:
    """Per-second rates of monotonic counters between two readings (none after a reset)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, key: str, counter: float, now: float) -> float | None:
        previous = self._last.get(key)
        self._last[key] = (counter, now)
        if previous is None or now <= previous[1] or counter < previous[0]:
            return None
        return (counter - previous[0]) / (now - previous[1])


class SystemSampler(Sampler):
    name = "system"
    default_interval = 10.0
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "mounts": {"type": "array", "items": {"type": "string"},
                       "description": "mount points whose usage to publish (default: /)"},
            "heartbeat": {"type": "boolean", "description": "publish flarebus.heartbeat"},
        },
    }
    options = (("--mount", "mounts", list, "mount point to report usage of (repeatable)"),)

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.host = socket.gethostname()
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self.rates = Rates()
        self._counters(time.monotonic())
        await asyncio.sleep(0.1)  # so even the first collection has a CPU figure

    def _counters(self, now: float) -> list[tuple[str, float | None]]:
        out: list[tuple[str, float | None]] = []
        disk = psutil.disk_io_counters()
        if disk is not None:
            out.append(("system.disk.read_bytes_per_s",
                        self.rates.rate("dr", disk.read_bytes, now)))
            out.append(("system.disk.write_bytes_per_s",
                        self.rates.rate("dw", disk.write_bytes, now)))
        net = psutil.net_io_counters()
        if net is not None:
            out.append(("system.net.recv_bytes_per_s", self.rates.rate("nr", net.bytes_recv, now)))
            out.append(("system.net.sent_bytes_per_s", self.rates.rate("ns", net.bytes_sent, now)))
        return out

    async def collect(self) -> Sequence[Sample]:
        host = self.host
        memory = psutil.virtual_memory()
        load1, load5, load15 = os.getloadavg()
        samples: list[MetricSample] = [
            gauge("system.cpu.percent", psutil.cpu_percent(interval=None), host=host),
            gauge("system.memory.percent", memory.percent, host=host),
            gauge("system.memory.used_bytes", memory.used, host=host),
            gauge("system.memory.available_bytes", memory.available, host=host),
            gauge("system.swap.percent", psutil.swap_memory().percent, host=host),
            gauge("system.load1", load1, host=host),
            gauge("system.load5", load5, host=host),
            gauge("system.load15", load15, host=host),
        ]
        for mount in self.config.get("mounts", ["/"]):
            samples.append(gauge("system.disk.percent", psutil.disk_usage(mount).percent,
                                 host=host, mount=mount))
        for name, value in self._counters(time.monotonic()):
            if value is not None:
                samples.append(gauge(name, value, host=host))
        if self.config.get("heartbeat", True):
            samples.append(gauge("flarebus.heartbeat", 1, host=host))
        return samples


class ProcessSampler(Sampler):
    name = "process"
    default_interval = 10.0
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"pid": {"type": "integer", "minimum": 1,
                               "description": "the process to watch (default: this one)"}},
    }
    options = (("--pid", "pid", int, "process id to sample (default: the sampler itself)"),)

    process: psutil.Process | None = None

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.host = socket.gethostname()
        self.process = psutil.Process(self.config.get("pid", os.getpid()))
        self.process.cpu_percent(interval=None)
        self.rates = Rates()
        await asyncio.sleep(0.1)

    async def collect(self) -> Sequence[Sample]:
        proc = self.process
        assert proc is not None, "init() first"
        now = time.monotonic()
        labels = {"host": self.host, "pid": str(proc.pid)}
        with proc.oneshot():  # raises NoSuchProcess when it is gone: the runtime retries
            labels["process"] = proc.name()
            memory = proc.memory_info()
            samples = [
                gauge("process.cpu.percent", proc.cpu_percent(interval=None), **labels),
                gauge("process.memory.rss_bytes", memory.rss, **labels),
                gauge("process.memory.percent", proc.memory_percent(), **labels),
                gauge("process.threads", proc.num_threads(), **labels),
            ]
            for name, read in (("process.open_files", lambda: len(proc.open_files())),
                               ("process.fds", proc.num_fds)):
                with contextlib.suppress(psutil.AccessDenied, AttributeError):
                    samples.append(gauge(name, read(), **labels))
            try:
                io = proc.io_counters()
            except (psutil.AccessDenied, AttributeError):
                io = None
            if io is not None:
                for name, key, value in (("process.io.read_bytes_per_s", "r", io.read_bytes),
                                         ("process.io.write_bytes_per_s", "w", io.write_bytes)):
                    rate = self.rates.rate(key, value, now)
                    if rate is not None:
                        samples.append(gauge(name, rate, **labels))
        return samples
