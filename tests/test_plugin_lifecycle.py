"""One lifecycle for every kind: async init/close awaited, duck-typed sync plugins, lazy imports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from flarebus.actions.host import PluginHost
from flarebus.config import PluginSettings
from flarebus.events import ActionRef, Trigger
from flarebus.plugin import (
    Action,
    Exporter,
    Frame,
    Plugin,
    Sample,
    Sink,
    close_plugin,
    kind_of,
    open_plugin,
)
from flarebus.registry import discover
from flarebus.sampler import Sampler, gauge
from flarebus.samplers.runtime import collect_once
from tests.plugin_pkg.harness import fresh_stream, publish, registry_of, running_worker, trigger
from tests.plugin_pkg.harness import wait_until as wait
from tests.support import ROOT


class Greeting(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str = "hi"


class Lifecycle(Plugin):
    """Records the lifecycle; each step yields to the loop first, so it is recorded only when
    the coroutine was really awaited (one never awaited never runs)."""

    events: list[str]

    async def init(self, config: Any) -> None:
        await asyncio.sleep(0)
        await super().init(config)
        self.events = [f"init {config!r}"]

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.events.append("close")


class AsyncAction(Lifecycle, Action):
    name = "async_action"
    config_schema = Greeting

    async def execute(self, trigger: Trigger) -> None:
        self.events.append(f"execute {self.config.greeting}")


class AsyncSink(Lifecycle, Sink):
    name = "async_sink"

    async def notify(self, rule_name: str, msg: str) -> None:
        self.events.append(f"notify {rule_name}")


class AsyncSampler(Lifecycle, Sampler):
    name = "async_sampler"

    async def collect(self) -> Sequence[Sample]:
        self.events.append("collect")
        return [gauge("lifecycle.x", 1)]


class AsyncExporter(Lifecycle, Exporter):
    name = "async_exporter"

    async def export(self, root: Frame) -> bytes:
        return root.name.encode()


async def test_async_init_and_close_are_awaited_for_actions_and_sinks() -> None:
    """The worker's host awaits init(validated config) before the first run and close after."""
    action, sink = AsyncAction(), AsyncSink()
    host = PluginHost(registry_of(action, sink, builtins=False),
                      {"async_action": PluginSettings(config={"greeting": "hey"})})
    await host.start()
    await host.run(ActionRef(plugin="async_action"), trigger("r1"))
    await host.run(ActionRef(plugin="async_sink"), trigger("r2"))
    await host.close()
    assert action.events == ["init Greeting(greeting='hey')", "execute hey", "close"]
    assert sink.events == ["init {}", "notify r2", "close"]


async def test_async_init_and_close_are_awaited_for_samplers_and_exporters() -> None:
    """The sampler runtime and the shared lifecycle helpers await them for the other kinds."""
    sampler = AsyncSampler()
    [sample] = await collect_once(sampler, {"n": 1})
    assert sample.name == "lifecycle.x"  # type: ignore[union-attr]
    assert sampler.events == ["init {'n': 1}", "collect", "close"]
    exporter = AsyncExporter()
    assert kind_of(exporter) == "exporter"
    await open_plugin(exporter, {})
    await close_plugin(exporter)
    assert exporter.events == ["init {}", "close"]


class DuckAction:
    """No base class, every method plain `def`: what a quick plugin file may hold."""

    name = "duck"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def init(self, config: dict[str, Any]) -> None:
        self.prefix = config["prefix"]
        self.calls.append(("init", threading.current_thread().name))

    def validate_config(self) -> None:
        if not self.prefix:
            raise ValueError("prefix must not be empty")

    def execute(self, trigger: Trigger) -> None:
        self.calls.append((f"{self.prefix}{trigger.rule}", threading.current_thread().name))

    def close(self) -> None:
        self.calls.append(("close", threading.current_thread().name))


class DuckSampler:
    """A duck-typed sampler: plain def collect, a stream it does not use."""

    name = "duck_sampler"
    default_interval = 5.0

    def collect(self) -> list[Sample]:
        return [gauge("duck.value", 7)]

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        raise NotImplementedError
        yield []


async def test_a_duck_typed_sync_plugin_still_runs(private_nc: Client) -> None:
    """Plain def init/validate_config/close on the loop, execute in the thread pool."""
    duck = DuckAction()
    js = await fresh_stream(private_nc)
    fired = trigger("duck-rule", actions=["duck"])
    async with running_worker(private_nc, duck,
                              plugin_settings={"duck": PluginSettings(config={"prefix": "q-"})}):
        await publish(js, [fired])
        await wait(lambda: any(c[0] == "q-duck-rule" for c in duck.calls), what="the duck run")
    loop_thread = threading.main_thread().name
    assert duck.calls[0] == ("init", loop_thread)
    assert duck.calls[1][0] == "q-duck-rule" and duck.calls[1][1] != loop_thread
    assert duck.calls[-1] == ("close", loop_thread)
    [sample] = await collect_once(DuckSampler())  # type: ignore[arg-type]
    assert (sample.name, sample.value) == ("duck.value", 7.0)  # type: ignore[union-attr]


def test_a_duck_typed_plugin_of_no_kind_is_reported(tmp_path: Path) -> None:
    """A plugin declaring a kind it lacks the method of is broken, with what the kind needs."""
    (tmp_path / "half.py").write_text(textwrap.dedent("""\
        class Half:
            name = "half"
            kind = "sink"
            def execute(self, trigger): ...
        plugin = Half()
        """))
    registry = discover(tmp_path, use_entry_points=False, builtins=False)
    assert registry.plugins == {}
    assert "declares kind 'sink' but has no notify(rule_name, msg)" in registry.broken[0].error


def test_a_sampler_lookup_imports_no_action_code() -> None:
    """Built-ins are imported when looked up: `flarebus sample system` loads no action."""
    program = ("import json, sys\n"
               "from flarebus.cli.main import main\n"
               "code = main(['sample', 'system', '--print', '--once'])\n"
               "print(json.dumps(sorted(m for m in sys.modules if m.startswith('flarebus'))))\n"
               "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout.splitlines()[-1])
    assert "flarebus.samplers.system" in modules and "flarebus.registry" in modules
    assert [m for m in modules if m.startswith("flarebus.actions")] == []
