"""Running plugins: config validated before use, timeouts, concurrency limits, sync in threads.

The worker asks the host to run one action of one trigger; the host picks the
plugin instance for that action's effective config (the ``plugins:`` section
merged with the rule's own), enforces the plugin's timeout by cancellation and
its concurrency limit with a semaphore, and runs a plain ``def`` ``execute``
or ``notify`` in a bounded thread pool so a blocking plugin cannot stall the
worker's event loop. The lifecycle around it (validated config, ``init``,
``validate_config``, ``close``) is the one every kind has, from
``flarebus.plugin``. A sink runs as an action through ``notify(trigger.rule,
message)``; a prepared plugin is an ``ActionPlugin`` or a ``SinkPlugin``, tagged by kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from flarebus.config import PluginSettings
from flarebus.errors import ActionError, PluginConfigError, Problem
from flarebus.events import ActionRef, Trigger
from flarebus.grouping import TriggerGroup, group_text
from flarebus.plugin import (
    ActionPlugin,
    GroupAware,
    Kind,
    SinkPlugin,
    a_kind,
    close_plugin,
    maybe_await,
    message_for,
    open_plugin,
)
from flarebus.plugin_config import ConfigOrigin, merged, validated_config, validation_failure
from flarebus.problems import sort_problems
from flarebus.registry import Found, Registry
from flarebus.yamlfile import YamlDocument

log = logging.getLogger("flarebus.worker")

#: The kinds a trigger may name as its action.
RUNNABLE: tuple[Kind, ...] = ("action", "sink")


@dataclass(frozen=True)
class PreparedAction:
    """An action instance ready for one effective config, and its timeout."""

    name: str
    instance: ActionPlugin
    timeout: float
    kind: Literal["action"] = "action"


@dataclass(frozen=True)
class PreparedSink:
    """A sink instance ready for one effective config, and its timeout."""

    name: str
    instance: SinkPlugin
    timeout: float
    kind: Literal["sink"] = "sink"


#: Tagged by ``kind``: checking it narrows ``instance`` (no Protocol check per trigger).
Prepared = PreparedAction | PreparedSink


async def call(func: Callable[..., Any], *args: Any, pool: ThreadPoolExecutor | None = None
               ) -> Any:
    """Run a plugin's work: awaited when ``async def``, in the thread pool when plain ``def``.

    (The lifecycle methods run on the loop instead, through ``open_plugin``:
    they run once, while ``execute`` runs per trigger and may block for long.)

    A plugin calling ``sys.exit`` fails its action like any error: SystemExit left
    to propagate would end the worker's event loop, and every other trigger with it.
    """
    try:
        if inspect.iscoroutinefunction(func):
            return await func(*args)
        loop = asyncio.get_running_loop()
        return await maybe_await(await loop.run_in_executor(pool, functools.partial(func, *args)))
    except SystemExit as exc:
        raise RuntimeError(f"the plugin called sys.exit({exc.code!r}); a plugin cannot end "
                           "the worker") from None


def not_runnable(found: Found) -> ActionError:
    return ActionError(found.name, f"is {a_kind(found.kind)}, not an action or sink",
                       permanent=True)


def typed(found: Found, plugin: object, timeout: float) -> Prepared:
    """The plugin as the action or sink its kind says (checked against the Protocol once)."""
    if found.kind == "sink" and isinstance(plugin, SinkPlugin):
        return PreparedSink(found.name, plugin, timeout)
    if found.kind == "action" and isinstance(plugin, ActionPlugin):
        return PreparedAction(found.name, plugin, timeout)
    raise not_runnable(found)


class PluginHost:
    """The runnable plugins of one worker, initialised with validated config."""

    def __init__(self, registry: Registry, settings: Mapping[str, PluginSettings], *,
                 default_timeout: float = 30.0, threads: int = 8,
                 config_doc: YamlDocument | None = None, nc: Any = None) -> None:
        self.registry = registry
        self.settings = dict(settings)
        self.default_timeout = default_timeout
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="flarebus-plugin")
        self.config_doc = config_doc
        self.nc = nc
        self._base: dict[str, Prepared] = {}
        self._variants: dict[tuple[str, bytes], Prepared] = {}
        self._locks: dict[str, asyncio.Semaphore] = {}
        self._building: dict[tuple[str, bytes], asyncio.Lock] = {}

    def _settings(self, name: str) -> PluginSettings:
        return self.settings.get(name) or PluginSettings()

    def _origin(self, name: str) -> ConfigOrigin:
        if self.config_doc is not None and name in self.settings:
            return ConfigOrigin(self.config_doc.file, self.config_doc, ("plugins", name, "config"))
        return ConfigOrigin(f"<plugins.{name}.config>")

    def unknown_settings(self) -> list[Problem]:
        """``plugins:`` entries naming no action or sink (a typo, a plugin not installed, or
        a sampler, which the ``samplers:`` section configures)."""
        problems = []
        for name in self.settings:
            found = self.registry.get(name)
            if found is not None and found.kind in RUNNABLE:
                continue
            if found is not None:
                message = (f"plugins.{name}: is {a_kind(found.kind)}; this section configures "
                           "actions and sinks (samplers are configured in samplers:)")
            else:
                known = ", ".join(self.registry.names(*RUNNABLE))
                message = f"plugins.{name}: no plugin of this name was found (found: {known})"
            if self.config_doc is not None:
                problems.append(self.config_doc.problem(("plugins", name), message, key=True))
            else:
                problems.append(Problem("<settings>", 1, 1, message))
        return problems

    async def start(self) -> None:
        """Validate and initialise every enabled runnable plugin; all problems in one error."""
        problems: list[Problem] = self.unknown_settings()
        for found in self.registry.load(*RUNNABLE):
            if not self._settings(found.name).enabled:
                continue
            config = self._settings(found.name).config
            try:
                self._base[found.name] = await self._prepare(
                    found, found.plugin, config, self._origin(found.name))
            except PluginConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            await self.close()
            raise PluginConfigError(sort_problems(problems))

    async def _prepare(self, found: Found, instance: object, config: Mapping[str, Any],
                       origin: ConfigOrigin) -> Prepared:
        settings = self._settings(found.name)
        timeout = settings.timeout or getattr(instance, "timeout", None) or self.default_timeout
        prepared = typed(found, instance, float(timeout))
        value = validated_config(instance, config, origin, found.name)
        try:
            use_nats = getattr(instance, "use_nats", None)  # an optional hook
            if self.nc is not None and callable(use_nats):
                use_nats(self.nc)
            await open_plugin(instance, value)
        except PluginConfigError:
            raise
        except Exception as exc:
            raise validation_failure(found.name, exc, origin) from exc
        limit = settings.concurrency or getattr(instance, "concurrency", None)
        if limit and found.name not in self._locks:
            self._locks[found.name] = asyncio.Semaphore(limit)
        return prepared

    async def prepared(self, ref: ActionRef, trigger: Trigger) -> Prepared:
        """The instance for this action's config; ActionError(permanent) when it cannot be."""
        name = ref.plugin
        found = self.registry.get(name)
        if found is None:
            known = ", ".join(self.registry.names(*RUNNABLE))
            raise ActionError(name, f"no plugin named {name!r} (found: {known})", permanent=True)
        if found.kind not in RUNNABLE:
            raise not_runnable(found)
        if not self._settings(name).enabled:
            raise ActionError(name, f"is disabled in the config file (plugins.{name}.enabled)",
                              permanent=True)
        base = self._base.get(name)
        if base is None:
            raise ActionError(name, "was not initialised", permanent=True)
        if not ref.config:
            return base
        key = (name, msgspec.json.encode(ref.config, order="sorted"))
        variant = self._variants.get(key)
        if variant is not None:
            return variant
        async with self._building.setdefault(key, asyncio.Lock()):
            variant = self._variants.get(key)
            if variant is None:
                variant = await self._variant(found, ref, trigger)
                self._variants[key] = variant
        return variant

    async def _variant(self, found: Found, ref: ActionRef, trigger: Trigger) -> Prepared:
        """A separate instance for a rule's own config, validated before its first trigger."""
        instance = found.new_instance()
        reserved = sorted(set(ref.config) & set(getattr(instance, "operator_only", ())))
        if reserved:  # e.g. where an http action may connect: not the rule author's to widen
            raise ActionError(found.name, f"rule {trigger.rule!r} may not set "
                                          f"{', '.join(reserved)} (only the plugins: section "
                                          "of the worker's config may)", permanent=True)
        config = merged(self._settings(found.name).config, ref.config)
        origin = ConfigOrigin(f"<trigger of rule {trigger.rule}, action {found.name}>",
                              rule=trigger.rule)
        try:
            return await self._prepare(found, instance, config, origin)
        except PluginConfigError as exc:
            raise ActionError(found.name, str(exc), permanent=True) from exc

    async def run(self, ref: ActionRef, work: Trigger | TriggerGroup) -> None:
        """Run one action for a trigger or a group within its timeout and concurrency limit.

        A group goes to ``execute_group`` when the plugin has it; else an action's
        ``execute`` runs per alert, in order, and a sink gets one message for the group.
        """
        trigger = work if isinstance(work, Trigger) else work.alerts[0]
        prepared = await self.prepared(ref, trigger)
        lock = self._locks.get(prepared.name)
        async with lock if lock is not None else contextlib.nullcontext():
            try:
                async with asyncio.timeout(prepared.timeout):
                    if isinstance(work, Trigger):
                        await self._invoke(prepared, work)
                    else:
                        await self._invoke_group(prepared, work)
            except TimeoutError:
                raise ActionError(prepared.name, f"timed out after {prepared.timeout:g}s "
                                                 "(cancelled)") from None

    async def _invoke_group(self, prepared: Prepared, group: TriggerGroup) -> None:
        instance = prepared.instance
        if isinstance(instance, GroupAware):
            await call(instance.execute_group, group, pool=self.pool)
        elif prepared.kind == "sink":
            await call(prepared.instance.notify, group.rule, group_text(group), pool=self.pool)
        else:
            for trigger in group.alerts:
                await call(prepared.instance.execute, trigger, pool=self.pool)

    async def _invoke(self, prepared: Prepared, trigger: Trigger) -> None:
        if prepared.kind == "sink":
            sink = prepared.instance
            formatter = getattr(sink, "message", None)  # optional: the Sink base class has it
            text = formatter(trigger) if callable(formatter) else message_for(trigger)
            await call(sink.notify, trigger.rule, text, pool=self.pool)
        else:
            await call(prepared.instance.execute, trigger, pool=self.pool)

    async def close(self) -> None:
        """Close every initialised instance; a failing close is logged, not raised."""
        for prepared in [*self._base.values(), *self._variants.values()]:
            try:
                await asyncio.wait_for(close_plugin(prepared.instance), 10)
            except Exception as exc:
                log.warning("plugin %r: close failed: %s", prepared.name, exc)
        self._base.clear()
        self._variants.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
