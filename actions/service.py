"""Assembling a worker from a Config: discover, validate, connect, serve.

``flarebus worker`` and ``flarebus up`` both call :func:`run_worker`; a plugin
config error or a plugin name clash stops the worker before it takes any
trigger (fail fast and loud, with file:line:column), while a broken plugin
file is only reported.
"""

from __future__ import annotations

import asyncio
import logging

from flarebus import bus
from flarebus.actions.gate import Gate
from flarebus.actions.host import PluginHost
from flarebus.actions.worker import Worker, serve
from flarebus.config import Config, config_document
from flarebus.registry import Registry, discover
from flarebus.stopping import unless_stopped

log = logging.getLogger("flarebus.worker")


async def run_worker(config: Config, *, stop: asyncio.Event | None = None,
                     handle_signals: bool | None = None,
                     registry: Registry | None = None) -> Worker:
    """Run a worker until ``stop`` is set, or (without ``stop``) until SIGTERM/SIGINT.

    Returns the worker, drained. ``flarebus up`` passes its own ``stop`` event
    and the registry it discovered for its samplers too (checked here); so does
    ``flarebus worker``, whose signals set it. With ``stop``, a stop request
    while NATS is still being waited for raises ``flarebus.stopping.Stopped``.
    """
    registry = registry or discover(config.worker.plugin_dir)
    registry.check()
    connecting = bus.connect(config.nats, retry_initial=True)
    nc = await (connecting if stop is None else unless_stopped(connecting, stop))
    host = PluginHost(registry, config.plugins, default_timeout=config.worker.timeout,
                      threads=config.worker.threads, config_doc=config_document(config), nc=nc)
    signals = stop is None if handle_signals is None else handle_signals
    try:
        await host.start()
        return await serve(nc, host, config.worker, handle_signals=signals, stop=stop,
                           grouping=config.group, jetstream=config.jetstream,
                           gate=Gate(config.inhibit, config.rate_limits))
    finally:
        await host.close()
        await bus.close(nc)
