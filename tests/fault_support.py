"""Fault-suite helpers: floods of samples, engine stalls (SIGSTOP), resident memory."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from nats.aio.client import Client

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.nats_server import EmbeddedNats
from tests.engine_support import EngineProcess

#: A sample of the flood: one series, far below any threshold of the fault rules.
FLOOD_SAMPLE = '{"name":"%s","value":1,"ts":%.3f,"labels":{"host":"h%d"}}'


async def flood(nc: Client, subject: str, name: str, count: int, ts: float) -> None:
    """Publish ``count`` small samples of ``name`` as fast as the client can."""
    for i in range(count):
        await nc.publish(subject, (FLOOD_SAMPLE % (name, ts, i % 50)).encode())
        if i % 10_000 == 0:
            await nc.flush()
    await nc.flush()


async def stalled(engine: EngineProcess, seconds: float, during: asyncio.Future[None] | None
                  = None) -> float:
    """SIGSTOP the engine for ``seconds`` (awaiting ``during`` meanwhile); the SIGCONT time."""
    engine.signal(signal.SIGSTOP)
    began = time.monotonic()
    try:
        if during is not None:
            await during
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    finally:
        engine.signal(signal.SIGCONT)
    return time.time()


def rss_kib(pid: int) -> int:
    """A process' resident set size in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


@contextlib.asynccontextmanager
async def engine_on_own_server(tmp_path: Path, rules: Path, *extra: str,
                               server_args: tuple[str, ...] = ()
                               ) -> AsyncIterator[tuple[EngineProcess, Client, EmbeddedNats]]:
    """A started `flarebus engine` on a nats-server of the test's own, a client, the server.

    Fault tests stall, flood and kill: on the session's server they would disturb
    the other tests. Everything is stopped on the way out.
    """
    server = EmbeddedNats(tmp_path / "nats", extra_args=server_args)
    server.start()
    engine = EngineProcess(server.url, [rules], *extra, coordinated=True)
    nc = await bus.connect(NatsSettings(servers=[server.url], reconnect_wait=0.2))
    try:
        engine.start()
        yield engine, nc, server
    finally:
        engine.stop()
        await nc.close()
        server.stop()
