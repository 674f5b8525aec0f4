"""Running plugins: config validated before use, timeouts, concurrency limits, sync in threads.

The worker asks the host to run one action of one trigger; the host picks the
plugin instance for that action's effective config (the ``plugins:`` section
merged with the rule's own), enforces the plugin's timeout by cancellation and
its concurrency limit with a semaphore, and runs plain ``def`` plugins in a
bounded thread pool so a blocking plugin cannot stall the worker's event loop.
A sink runs as an action through ``notify(trigger.rule, message)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from flarebus.actions.plugin_config import ConfigOrigin, convert_config, merged, validation_failure
from flarebus.actions.registry import Found, Registry
from flarebus.config import PluginSettings
from flarebus.errors import ActionError, PluginConfigError, Problem
from flarebus.events import ActionRef, Trigger
from flarebus.plugin import message_for
from flarebus.validation import sort_problems
from flarebus.yamlfile import YamlDocument

log = logging.getLogger("flarebus.worker")

#: The kinds a trigger may name as its action.
RUNNABLE = ("action", "sink")


class Prepared(msgspec.Struct):
    """A plugin instance ready for one effective config, and its limits."""

    name: str
    kind: str
    instance: Any
    timeout: float


async def call(func: Any, *args: Any, pool: ThreadPoolExecutor | None = None) -> Any:
    """Call a plugin method: awaited when async, in the thread pool when plain ``def``."""
    if inspect.iscoroutinefunction(func):
        return await func(*args)
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(pool, functools.partial(func, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


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
        """``plugins:`` entries naming no discovered plugin (a typo, or a plugin not installed)."""
        problems = []
        for name in self.settings:
            if name in self.registry.plugins:
                continue
            known = ", ".join(sorted(self.registry.plugins))
            message = f"plugins.{name}: no plugin of this name was found (found: {known})"
            if self.config_doc is not None:
                problems.append(self.config_doc.problem(("plugins", name), message, key=True))
            else:
                problems.append(Problem("<settings>", 1, 1, message))
        return problems

    async def start(self) -> None:
        """Validate and initialise every enabled runnable plugin; all problems in one error."""
        problems: list[Problem] = self.unknown_settings()
        for found in self.registry:
            if found.kind not in RUNNABLE or not self._settings(found.name).enabled:
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

    async def _prepare(self, found: Found, instance: Any, config: Mapping[str, Any],
                       origin: ConfigOrigin) -> Prepared:
        value = convert_config(found.name, getattr(instance, "config_schema", None), config,
                               origin)
        try:
            if self.nc is not None and callable(getattr(instance, "use_nats", None)):
                instance.use_nats(self.nc)
            if callable(getattr(instance, "init", None)):
                await call(instance.init, value, pool=self.pool)
            if callable(getattr(instance, "validate_config", None)):
                await call(instance.validate_config, pool=self.pool)
        except PluginConfigError:
            raise
        except Exception as exc:
            raise validation_failure(found.name, exc, origin) from exc
        settings = self._settings(found.name)
        timeout = settings.timeout or getattr(instance, "timeout", None) or self.default_timeout
        limit = settings.concurrency or getattr(instance, "concurrency", None)
        if limit and found.name not in self._locks:
            self._locks[found.name] = asyncio.Semaphore(limit)
        return Prepared(found.name, found.kind, instance, float(timeout))

    async def prepared(self, ref: ActionRef, trigger: Trigger) -> Prepared:
        """The instance for this action's config; ActionError(permanent) when it cannot be."""
        name = ref.plugin
        found = self.registry.get(name)
        if found is None:
            known = ", ".join(sorted(f.name for f in self.registry if f.kind in RUNNABLE))
            raise ActionError(name, f"no plugin named {name!r} (found: {known})", permanent=True)
        if found.kind not in RUNNABLE:
            raise ActionError(name, f"is a {found.kind}, not an action or sink", permanent=True)
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
        try:
            instance = type(found.plugin)()
        except Exception:
            instance = copy.copy(found.plugin)
        config = merged(self._settings(found.name).config, ref.config)
        origin = ConfigOrigin(f"<trigger of rule {trigger.rule}, action {found.name}>",
                              rule=trigger.rule)
        try:
            return await self._prepare(found, instance, config, origin)
        except PluginConfigError as exc:
            raise ActionError(found.name, str(exc), permanent=True) from exc

    async def run(self, ref: ActionRef, trigger: Trigger) -> None:
        """Run one action for one trigger within its timeout and concurrency limit."""
        prepared = await self.prepared(ref, trigger)
        lock = self._locks.get(prepared.name)
        async with lock if lock is not None else contextlib.nullcontext():
            try:
                async with asyncio.timeout(prepared.timeout):
                    await self._invoke(prepared, trigger)
            except TimeoutError:
                raise ActionError(prepared.name, f"timed out after {prepared.timeout:g}s "
                                                 "(cancelled)") from None

    async def _invoke(self, prepared: Prepared, trigger: Trigger) -> None:
        instance = prepared.instance
        if prepared.kind == "sink":
            formatter = getattr(instance, "message", None)
            text = formatter(trigger) if callable(formatter) else message_for(trigger)
            await call(instance.notify, trigger.rule, text, pool=self.pool)
        else:
            await call(instance.execute, trigger, pool=self.pool)

    async def close(self) -> None:
        """Close every initialised instance; a failing close is logged, not raised."""
        for prepared in [*self._base.values(), *self._variants.values()]:
            closer = getattr(prepared.instance, "close", None)
            if callable(closer):
                try:
                    await asyncio.wait_for(call(closer, pool=self.pool), 10)
                except Exception as exc:
                    log.warning("plugin %r: close failed: %s", prepared.name, exc)
        self._base.clear()
        self._variants.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
