"""The one plugin registry: entry points, then ``PLUGIN_DIR`` files, then the built-ins.

Every kind (action, sink, sampler, exporter, visualization) is found here, in the order users
read about in docs/plugins.md, under one rule: two plugins with one name is an
error that names both sources, never a silent override. A worker fleet must
not run a different ``http`` (or a host publish a different ``system``)
depending on what happens to be installed on one machine. A ``PLUGIN_DIR``
file that fails to import is reported with its traceback and skipped; one bad
file never stops the others.

The built-ins are named by ``"module:attribute"`` strings with their kind, so
a clash with one is known without importing it, and a built-in is imported
only when it is looked up: ``flarebus sample system`` never imports the http
action, a worker never imports the py-spy sampler. This module imports no
role (engine, actions, samplers, cli); the strings point into them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
import traceback
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Literal, cast

from flarebus.errors import PluginError, describe
from flarebus.plugin import NEEDS, AnyPlugin, Kind, SamplerPlugin, a_kind, kind_of

log = logging.getLogger("flarebus.plugins")

ENTRY_POINT_GROUP = "flarebus.plugins"
#: Parent name of PLUGIN_DIR modules: private, so a file named ``json.py`` shadows nothing.
PLUGIN_DIR_PACKAGE = "_flarebus_plugin_dir"

Origin = Literal["entry point", "plugin dir", "built-in"]

#: name -> (kind, "module:attribute") of the built-in plugins, imported when looked up.
BUILTINS: dict[str, tuple[Kind, str]] = {
    "log": ("action", "flarebus.actions.builtins.log:LogAction"),
    "file": ("action", "flarebus.actions.builtins.file:FileAction"),
    "http": ("action", "flarebus.actions.builtins.http:HttpAction"),
    "webhook": ("sink", "flarebus.actions.builtins.sinks:WebhookSink"),
    "slack": ("sink", "flarebus.actions.builtins.sinks:SlackSink"),
    "nats": ("action", "flarebus.actions.builtins.nats:NatsAction"),
    "flamegraph": ("action", "flarebus.actions.builtins.flamegraph:FlamegraphAction"),
    "alertmanager": ("action", "flarebus.actions.builtins.alertmanager:AlertmanagerAction"),
    "system": ("sampler", "flarebus.samplers.system:SystemSampler"),
    "process": ("sampler", "flarebus.samplers.system:ProcessSampler"),
    "prometheus": ("sampler", "flarebus.samplers.prometheus:PrometheusSampler"),
    "stack": ("sampler", "flarebus.samplers.pyspy:PySpySampler"),
    "stdin": ("sampler", "flarebus.samplers.command:StdinSampler"),
    "exec": ("sampler", "flarebus.samplers.command:ExecSampler"),
    "flame": ("visualization", "flarebus.web.visuals:FlameView"),
    "icicle": ("visualization", "flarebus.web.visuals:IcicleView"),
    "top": ("visualization", "flarebus.web.visuals:TopTable"),
}


@dataclass
class Found:
    """One discovered plugin: its name, kind, where it came from, and the object.

    A built-in's object is imported on first use of ``plugin``; the others are
    loaded by discovery (their name and kind are only known from the object).
    """

    name: str
    kind: Kind
    origin: Origin
    source: str  # "pkg.mod:plugin (dist 1.0)", "/plugins/x.py", "flarebus.x:Y"
    loaded: AnyPlugin | None = field(default=None, repr=False)

    @classmethod
    def of(cls, plugin: object, default_name: str, origin: Origin, source: str) -> Found:
        """The Found for a loaded object; PluginError when it is no plugin of any kind."""
        name = getattr(plugin, "name", None) or default_name
        if getattr(plugin, "name", None) != name:
            with contextlib.suppress(AttributeError):
                plugin.name = name  # type: ignore[attr-defined]
        kind = kind_of(plugin)
        if kind is None:
            declared = getattr(plugin, "kind", None)
            why = (f"declares kind {declared!r} but has no {NEEDS[declared]}"
                   if declared in NEEDS else "is not a plugin: it has none of "
                   + ", ".join(NEEDS.values()))
            raise PluginError(name, why, source=source)
        return cls(name, kind, origin, source, cast(AnyPlugin, plugin))  # kind_of checked it

    @property
    def plugin(self) -> AnyPlugin:
        """The plugin object (a built-in is imported now); PluginError when it cannot be."""
        if self.loaded is None:
            self.loaded = self._import()
        return self.loaded

    def _import(self) -> AnyPlugin:
        module_name, _, attr = self.source.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
            found = Found.of(_instantiate(obj), self.name, self.origin, self.source)
        except Exception as exc:
            raise PluginError(self.name, f"cannot load: {describe(exc)}",
                              source=self.describe()) from exc
        if found.kind != self.kind:
            raise PluginError(self.name, f"is {a_kind(found.kind)}, not the {self.kind} the "
                                         "built-in table says", source=self.describe())
        return found.plugin

    def new_instance(self) -> AnyPlugin:
        """A fresh instance, for another config: the class called again, else a shallow copy."""
        plugin = self.plugin
        try:
            fresh = type(plugin)()
        except Exception:
            fresh = copy.copy(plugin)
        if getattr(fresh, "name", None) != self.name:
            with contextlib.suppress(AttributeError):
                fresh.name = self.name  # type: ignore[misc]
        return fresh

    def describe(self) -> str:
        return f"{self.origin} {self.source}"


@dataclass(frozen=True)
class Broken:
    """A plugin source that could not be loaded: where, why, and the traceback."""

    source: str
    error: str
    traceback: str


@dataclass
class Registry:
    """What discovery found: plugins by name, broken sources, and name clashes."""

    plugins: dict[str, Found] = field(default_factory=dict)
    broken: list[Broken] = field(default_factory=list)
    clashes: list[PluginError] = field(default_factory=list)

    def add(self, found: Found) -> None:
        other = self.plugins.get(found.name)
        if other is not None:
            self.clashes.append(PluginError(
                found.name, f"two plugins have this name: {other.describe()} and "
                            f"{found.describe()}; rename one or uninstall it",
                source=found.describe()))
            return
        self.plugins[found.name] = found

    def get(self, name: str) -> Found | None:
        return self.plugins.get(name)

    def names(self, *kinds: Kind) -> list[str]:
        """The names of the plugins of these kinds, sorted (for "known: ..." messages)."""
        return sorted(f.name for f in self if f.kind in kinds)

    def check(self) -> None:
        """Raise the first clash: a worker refuses to start on an ambiguous name."""
        if self.clashes:
            raise self.clashes[0]

    def load(self, *kinds: Kind) -> list[Found]:
        """Every plugin of these kinds (all kinds when none is named), imported now.

        A built-in that fails to import is moved to ``broken`` (a bug, but never
        a dead worker) and left out.
        """
        loaded = []
        for found in list(self):
            if kinds and found.kind not in kinds:
                continue
            try:
                found.plugin  # noqa: B018  (imports it)
            except PluginError as exc:
                del self.plugins[found.name]
                _broken(self, found.describe(), exc.__cause__ or exc)
                continue
            loaded.append(found)
        return loaded

    def find(self, name: str, kind: Kind) -> Found:
        """The plugin ``name`` of ``kind``; PluginError for a clash, no such name, another kind."""
        for clash in self.clashes:
            if clash.plugin == name:
                raise clash
        found = self.plugins.get(name)
        if found is None:
            known = ", ".join(self.names(kind)) or "none"
            raise PluginError(name, f"no such {kind} (known: {known})")
        if found.kind != kind:
            raise PluginError(name, f"is {a_kind(found.kind)}, not {a_kind(kind)}",
                              source=found.describe())
        return found

    def sampler(self, name: str) -> SamplerPlugin:
        """A new instance of the sampler ``name`` (each configured sampler has its own)."""
        plugin = self.find(name, "sampler").new_instance()
        if not isinstance(plugin, SamplerPlugin):  # kind_of checked it; this narrows the type
            raise PluginError(name, f"is not a sampler: it needs {NEEDS['sampler']}")
        return plugin

    def __iter__(self) -> Iterator[Found]:
        return iter(self.plugins.values())


def _instantiate(obj: Any) -> Any:
    """A class is instantiated; a module offers its ``plugin``; anything else is the plugin."""
    if isinstance(obj, types.ModuleType):
        if not hasattr(obj, "plugin"):
            raise PluginError(obj.__name__, "module has no module-level `plugin` object")
        obj = obj.plugin
    if inspect.isclass(obj):
        obj = obj()
    return obj


def _broken(registry: Registry, source: str, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    registry.broken.append(Broken(source, describe(exc), text))
    log.error("plugin %s could not be loaded and is skipped:\n%s", source, text.rstrip())


def _entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def load_entry_points(registry: Registry) -> None:
    """Plugins installed as packages, declaring ``[project.entry-points."flarebus.plugins"]``."""
    for ep in _entry_points():
        dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        source = f"{ep.value}{dist}"
        try:
            found = Found.of(_instantiate(ep.load()), ep.name, "entry point", source)
        except Exception as exc:
            _broken(registry, f"entry point {ep.name} = {source}", exc)
            continue
        registry.add(found)


def _module_name(path: Path) -> str:
    digest = hashlib.blake2b(str(path.resolve()).encode(), digest_size=4).hexdigest()
    stem = "".join(c if c.isalnum() or c == "_" else "_" for c in path.stem)
    return f"{PLUGIN_DIR_PACKAGE}.{stem}_{digest}"


def load_file(path: Path) -> list[Any]:
    """Import one plugin file under a private module name; its ``plugin`` (or ``plugins``)."""
    name = _module_name(path)
    if PLUGIN_DIR_PACKAGE not in sys.modules:
        package = types.ModuleType(PLUGIN_DIR_PACKAGE)
        package.__path__ = []
        sys.modules[PLUGIN_DIR_PACKAGE] = package
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    if hasattr(module, "plugins"):
        return [_instantiate(p) for p in module.plugins]
    if not hasattr(module, "plugin"):
        raise PluginError(path.stem, "defines no module-level `plugin` object "
                                     "(e.g. `plugin = MyAction()`)", source=str(path))
    return [_instantiate(module.plugin)]


def load_plugin_dir(registry: Registry, plugin_dir: str | Path) -> None:
    """Every ``*.py`` in the directory (not ``_private.py``), in name order."""
    directory = Path(plugin_dir)
    if not directory.is_dir():
        registry.broken.append(Broken(f"plugin dir {directory}", "not a directory", ""))
        log.error("PLUGIN_DIR %s is not a directory; no plugins loaded from it", directory)
        return
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            found = [Found.of(p, path.stem, "plugin dir", str(path)) for p in load_file(path)]
        except Exception as exc:
            _broken(registry, f"file {path}", exc)
            continue
        for item in found:
            registry.add(item)


def load_builtins(registry: Registry, names: Iterable[str] | None = None) -> None:
    """The built-ins by name and kind, not imported (``Found.plugin`` imports one)."""
    for name in names if names is not None else BUILTINS:
        kind, target = BUILTINS[name]
        registry.add(Found(name, kind, "built-in", target))


def discover(plugin_dir: str | Path | None = None, *, use_entry_points: bool = True,
             builtins: bool = True) -> Registry:
    """Entry points, then PLUGIN_DIR, then built-ins; clashes recorded, broken ones skipped."""
    registry = Registry()
    if use_entry_points:
        load_entry_points(registry)
    if plugin_dir:
        load_plugin_dir(registry, plugin_dir)
    if builtins:
        load_builtins(registry)
    return registry
