"""Running the console: its NATS feeds and its HTTP server, for ``flarebus web`` and ``up``.

``running_console`` is the whole lifecycle as one async context: it connects
(its own connection, so a slow page never holds up the engine's), starts the
feeds, binds the address and yields the URL; leaving it closes all three.
Port 0 picks a free port (the URL says which).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from flarebus import bus
from flarebus.config import Config
from flarebus.errors import WebError
from flarebus.plugin import VisualizationPlugin
from flarebus.registry import Registry, discover
from flarebus.silences import silences_bucket
from flarebus.web.app import Console, create_app
from flarebus.web.feeds import ConsoleState
from flarebus.web.silences import KvSilenceStore, SilenceStore

log = logging.getLogger("flarebus.web")


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8090`` for IPv6) -> (host, port); WebError when it is not."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise WebError(text, "is not host:port (e.g. 127.0.0.1:8090)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def visualizations(registry: Registry) -> dict[str, VisualizationPlugin]:
    """Every visualization plugin, built-ins included, by name (broken ones logged, skipped)."""
    out: dict[str, VisualizationPlugin] = {}
    for found in registry.load("visualization"):
        plugin = found.plugin
        if isinstance(plugin, VisualizationPlugin):
            out[found.name] = plugin
    for broken in registry.broken:
        log.warning("visualization plugin %s", broken)
    return out


@contextlib.asynccontextmanager
async def running_console(config: Config, *, listen: str | None = None,
                          registry: Registry | None = None,
                          silences: SilenceStore | None = None) -> AsyncIterator[str]:
    """The console serving at ``listen`` (default ``web.listen``) until the block ends."""
    address = listen or config.web.listen
    host, port = parse_listen(address)
    if not is_loopback(host) and config.web.token:
        log.warning("web console listens on %s: anyone who reaches it can read, and "
                    "with the token write", address)
    elif not is_loopback(host):
        log.warning("web console listens on %s (not loopback): anyone who reaches it can "
                    "read what is firing", address)
    nc = await bus.connect(config.nats)  # unreachable: one clear error, not a silent wait
    state = None
    runner = None
    own_silences: KvSilenceStore | None = None
    try:
        state = await ConsoleState(nc, stacks_prefix=config.engine.stacks_prefix,
                                   flamegraph_subjects=config.web.flamegraph_subjects,
                                   worker_consumer=config.worker.consumer).start()
        if silences is None:  # the bucket `flarebus silence` and the workers use, watched live
            changes = state.changes
            own_silences = await KvSilenceStore(
                await silences_bucket(nc.jetstream()),
                on_change=lambda: changes.bump("silences")).start()
            silences = own_silences
        console = Console(state, token=config.web.token or None,
                          visualizations=visualizations(registry or discover(
                              config.worker.plugin_dir)),
                          silences=silences, default_action=config.worker.default_action,
                          worker_consumer=config.worker.consumer)
        runner = web.AppRunner(create_app(console), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise WebError(address, exc.strerror or str(exc)) from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        yield f"http://{shown}:{bound[1]}/"
    finally:
        if runner is not None:
            await runner.cleanup()
        if own_silences is not None:
            await own_silences.close()
        if state is not None:
            await state.stop()
        await bus.close(nc)
