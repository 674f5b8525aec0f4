"""Helpers the tests share: running the real `flarebus` command, collecting messages."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def package_roots() -> dict[str, str]:
    """setup.py's mapping of import package -> repository folder (``flarebus.engine``: engine)."""
    spec = importlib.util.spec_from_file_location("linktree", ROOT / ".ci" / "linktree.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.roots()  # type: ignore[no-any-return]


def flarebus_cmd(*args: str) -> list[str]:
    """argv that runs the flarebus CLI of this checkout with this interpreter."""
    return [sys.executable, "-m", "flarebus", *args]


def run_flarebus(*args: str, input: bytes | str | None = None,
                 env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `flarebus ARGS...` to completion; text output captured."""
    full_env = {**os.environ, **(env or {})}
    if isinstance(input, bytes):
        input = input.decode()
    return subprocess.run(flarebus_cmd(*args), input=input, capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout, check=False)


def start_flarebus(*args: str, env: dict[str, str] | None = None,
                   cwd: str | Path | None = None, **kwargs: object) -> subprocess.Popen[str]:
    """Start `flarebus ARGS...` as a background process (the caller stops it)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(flarebus_cmd(*args), env=full_env, cwd=cwd or ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]


class Collector:
    """Subscribes to a subject and keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []
        self._arrived = asyncio.Event()

    async def on_message(self, msg: Msg) -> None:
        self.messages.append(msg)
        self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Msg]:
        """Wait until ``count`` messages arrived (or fail after ``timeout``)."""
        async def enough() -> None:
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.messages

    async def wait_until(self, done: Callable[[list[Msg]], bool],
                         timeout: float = 10.0) -> list[Msg]:
        """Wait until ``done(messages)`` holds (or fail after ``timeout``)."""
        async def enough() -> None:
            while not done(self.messages):
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(enough(), timeout)
        return self.messages


async def collect(nc: Client, subject: str) -> Collector:
    collector = Collector()
    await nc.subscribe(subject, cb=collector.on_message)
    await nc.flush()
    return collector


def span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter on the process' SDK tracer provider (installed once if needed)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def lines(*items: str) -> str:
    return "".join(f"{item}\n" for item in items)


__all__: Sequence[str] = ["DATA", "ROOT", "Collector", "collect", "flarebus_cmd", "lines",
                          "run_flarebus", "start_flarebus"]


#: Debian packages that give the real components some tests drive (``.ci/system-packages``).
SYSTEM_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


def system_binary(name: str) -> str:
    """The path of a real component's binary; skip (locally) or fail (CI) when it is missing.

    A real-component test is never skipped silently in CI: ``.ci/run`` installs the
    Debian packages first, and with ``CI`` set a missing binary is a failure.
    """
    import shutil

    import pytest

    path = shutil.which(name)
    if path:
        return path
    package = SYSTEM_PACKAGES.get(name, name)
    reason = f"{name} is not installed (apt-get install -y {package}; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
