"""One engine lifecycle: start unless stopped first, forward reloads, stop gracefully.

``flarebus engine`` (``run_engine``) and ``flarebus up`` (``running_engine``,
which runs a worker and samplers beside the engine) both go through
``running_engine``, so there is one start, one ready and one stop path: a
Ctrl-C while NATS is still unreachable ends the start at once, a SIGHUP that
arrives before the engine is ready is served once it is, and a started engine
is always stopped (no more input, publishes flushed, final checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from flarebus import stopping
from flarebus.config import Config
from flarebus.engine.service.engine import Engine

log = logging.getLogger("flarebus.engine")


async def _started(engine: Engine, stop: asyncio.Event) -> bool:
    """Start ``engine`` unless Ctrl-C comes first (e.g. while waiting for NATS); True if it did."""
    try:
        await stopping.unless_stopped(engine.start(), stop)
    except stopping.Stopped:
        return False
    return True


@contextlib.asynccontextmanager
async def running_engine(config: Config, rules_paths: Sequence[str | Path] | None = None, *,
                         stop: asyncio.Event, reload: asyncio.Event | None = None,
                         **options: Any) -> AsyncIterator[Engine | None]:
    """A started engine for the ``async with`` body (None when ``stop`` came first).

    Setting ``reload`` reloads the rule files (the callers' SIGHUP handlers set it).
    Leaving the body stops the engine gracefully; ``options`` go to ``Engine``.
    """
    engine = Engine(config, rules_paths, **options)
    if not await _started(engine, stop):
        yield None
        return
    forward: asyncio.Task[None] | None = None
    if reload is not None:
        async def forward_reloads() -> None:
            while True:
                await reload.wait()
                reload.clear()
                engine.request_reload()
        forward = asyncio.create_task(forward_reloads(), name="engine-reload-forward")
    try:
        yield engine
    finally:
        if forward is not None:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
        await engine.stop()


async def run_engine(config: Config, rules_paths: Sequence[str | Path] | None = None, *,
                     stop: asyncio.Event, ready: asyncio.Event | None = None,
                     reload: asyncio.Event | None = None, **options: Any) -> Engine | None:
    """Run an engine until ``stop`` is set, then stop it gracefully; returns it (for its stats).

    ``ready`` is set once it evaluates. None when ``stop`` came before it was ready.
    """
    async with running_engine(config, rules_paths, stop=stop, reload=reload,
                              **options) as engine:
        if engine is None:
            log.warning("stopped before the engine was ready (NATS was not reachable)")
            return None
        if ready is not None:
            ready.set()
        await stop.wait()
    return engine
