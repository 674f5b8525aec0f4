"""Fault-suite helpers: servers that cut slow consumers quickly, floods, stalls, RSS."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from nats.aio.client import Client

from flarebus.nats_server import EmbeddedNats
from tests.engine_support import EngineProcess

#: A sample of the flood: one series, far below any threshold of the fault rules.
FLOOD_SAMPLE = '{"name":"%s","value":1,"ts":%.3f,"labels":{"host":"h%d"}}'


def impatient_server(tmp_path: Path, write_deadline: str = "2s") -> EmbeddedNats:
    """A nats-server that disconnects a client not reading for ``write_deadline``.

    nats-server's default is 10 s; a short one lets a test stall an engine for a few
    seconds instead of half a minute and still get a server-side slow-consumer cut.
    """
    conf = tmp_path / "impatient.conf"
    conf.write_text(f'write_deadline: "{write_deadline}"\n')
    return EmbeddedNats(tmp_path / "nats", extra_args=("-c", str(conf)))


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
