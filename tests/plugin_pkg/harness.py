"""Helpers for the worker and plugin tests: triggers, a private server, an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from flarebus import bus
from flarebus.actions.gate import Gate
from flarebus.actions.host import PluginHost
from flarebus.actions.worker import Worker
from flarebus.config import NatsSettings, PluginSettings, WorkerSettings
from flarebus.events import ActionRef, Trigger, encoder
from flarebus.grouping import GroupSettings
from flarebus.registry import Found, Registry, load_builtins

HERE = Path(__file__).resolve().parent
PLUGINS = HERE / "plugins"  # PLUGIN_DIR of the process tests
_ids = itertools.count()

#: Short ack_wait and backoff so redeliveries and retries happen within a test's second.
FAST = WorkerSettings(concurrency=8, batch=8, max_tries=3, backoff_initial=0.05,
                      backoff_max=0.2, timeout=5.0, grace=3.0, ack_wait=2.0)


def settings(**changes: Any) -> WorkerSettings:
    """FAST with changes, and a consumer name of its own (each test its own durable)."""
    values = {f: getattr(FAST, f) for f in FAST.__struct_fields__}
    values["consumer"] = f"test-{next(_ids)}-{int(time.time() * 1000) % 100000}"
    values.update(changes)
    return WorkerSettings(**values)


def trigger(rule: str = "high-cpu", *, actions: Iterable[str | ActionRef] = ("log",),
            id: str | None = None, labels: dict[str, str] | None = None,
            metric_name: str = "cpu.usage", value: float = 93.5) -> Trigger:
    refs = [a if isinstance(a, ActionRef) else ActionRef(plugin=a) for a in actions]
    now = time.time()
    return Trigger(id=id or f"{rule}-{next(_ids)}-{now}", rule=rule, state="firing",
                   severity="warning", metric_name=metric_name, value=value,
                   threshold="> 80", duration=31.0, labels=labels or {"host": "web-1"},
                   annotations={}, active_since=now - 31, at=now, actions=refs)


async def publish(js: JetStreamContext, triggers: Iterable[Trigger],
                  headers: dict[str, str] | None = None) -> None:
    """Publish as the engine does: triggers.<rule>, Nats-Msg-Id = trigger id."""
    for t in triggers:
        await js.publish(bus.trigger_subject(t.rule), encoder.encode(t),
                         headers={bus.MSG_ID_HEADER: t.id, **(headers or {})})


async def wait_until(check: Callable[[], Any], timeout: float = 15.0,
                     what: str = "condition") -> None:
    """Poll ``check`` until it is true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)



async def connect(url: str) -> Client:
    return await bus.connect(NatsSettings(servers=[url], name="flarebus-test"))


async def fresh_stream(nc: Client) -> JetStreamContext:
    """The triggers stream, emptied: consumers created now see only this test's triggers."""
    js = await bus.ensure_jetstream(nc)
    await js.purge_stream(bus.TRIGGERS_STREAM)
    return js


def registry_of(*plugins: Any, builtins: bool = True) -> Registry:
    registry = Registry()
    for plugin in plugins:
        registry.add(Found.of(plugin, plugin.name, "plugin dir", f"test {plugin.name}"))
    if builtins:
        load_builtins(registry)
    return registry


@contextlib.asynccontextmanager
async def running_worker(nc: Client, *plugins: Any, worker: WorkerSettings | None = None,
                         plugin_settings: dict[str, PluginSettings] | None = None,
                         grouping: GroupSettings | None = None,
                         gate: Gate | None = None) -> AsyncIterator[Worker]:
    """A real Worker on ``nc`` running ``plugins`` (and the built-ins) until the block ends."""
    config = worker or settings()
    host = PluginHost(registry_of(*plugins), plugin_settings or {},
                      default_timeout=config.timeout, threads=4, nc=nc)
    await host.start()
    w = Worker(nc, host, config, grouping, gate=gate)
    await w.setup()
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(task, config.grace + 10)
        await host.close()


async def consumer_idle(js: JetStreamContext, consumer: str) -> bool:
    """Nothing left to deliver and nothing awaiting an ack."""
    info = await js.consumer_info(bus.TRIGGERS_STREAM, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0
