"""Finding plugins: entry points, then ``PLUGIN_DIR`` files, then the built-ins.

The order is the precedence users read about in docs/plugins.md. Two plugins
with one name is an error that names both sources, never a silent override:
a worker fleet must not run a different ``http`` depending on what happens to
be installed on one machine. A ``PLUGIN_DIR`` file that fails to import is
reported with its traceback and skipped; one bad file never stops the others.
"""

from __future__ import annotations

import contextlib
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
from typing import Any, Literal

from flarebus.errors import PluginError
from flarebus.plugin import Kind, kind_of

log = logging.getLogger("flarebus.plugins")

ENTRY_POINT_GROUP = "flarebus.plugins"
#: Parent name of PLUGIN_DIR modules: private, so a file named ``json.py`` shadows nothing.
PLUGIN_DIR_PACKAGE = "_flarebus_plugin_dir"

Origin = Literal["entry point", "plugin dir", "built-in"]

#: name -> "module:attribute" of the built-in plugins.
BUILTINS: dict[str, str] = {
    "log": "flarebus.actions.builtins.log:LogAction",
    "file": "flarebus.actions.builtins.file:FileAction",
    "http": "flarebus.actions.builtins.http:HttpAction",
    "webhook": "flarebus.actions.builtins.sinks:WebhookSink",
    "slack": "flarebus.actions.builtins.sinks:SlackSink",
    "nats": "flarebus.actions.builtins.nats:NatsAction",
    "flamegraph": "flarebus.actions.builtins.flamegraph:FlamegraphAction",
}


@dataclass(frozen=True)
class Found:
    """One discovered plugin: its name, kind, the object, and where it came from."""

    name: str
    kind: Kind
    plugin: Any
    origin: Origin
    source: str  # "entry point pkg.mod:plugin (dist 1.0)", "file /plugins/x.py", ...

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

    def of_kind(self, kind: Kind) -> list[Found]:
        return [f for f in self.plugins.values() if f.kind == kind]

    def check(self) -> None:
        """Raise the first clash: a worker refuses to start on an ambiguous name."""
        if self.clashes:
            raise self.clashes[0]

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


def _found(plugin: Any, default_name: str, origin: Origin, source: str) -> Found:
    name = getattr(plugin, "name", None) or default_name
    kind = kind_of(plugin)
    if kind is None:
        raise PluginError(name, "is not a plugin: it has none of execute(trigger), "
                                "notify(rule_name, msg), collect(), export(root)", source=source)
    if getattr(plugin, "name", None) != name:
        with contextlib.suppress(AttributeError):
            plugin.name = name
    return Found(name=name, kind=kind, plugin=plugin, origin=origin, source=source)


def _broken(registry: Registry, source: str, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    registry.broken.append(Broken(source, f"{type(exc).__name__}: {exc}", text))
    log.error("plugin %s could not be loaded and is skipped:\n%s", source, text.rstrip())


def _entry_points() -> Iterable[EntryPoint]:
    return entry_points(group=ENTRY_POINT_GROUP)


def load_entry_points(registry: Registry) -> None:
    """Plugins installed as packages, declaring ``[project.entry-points."flarebus.plugins"]``."""
    for ep in _entry_points():
        dist = f" ({ep.dist.name} {ep.dist.version})" if ep.dist is not None else ""
        source = f"{ep.value}{dist}"
        try:
            found = _found(_instantiate(ep.load()), ep.name, "entry point", source)
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
        source = f"file {path}"
        try:
            found = [_found(p, path.stem, "plugin dir", str(path)) for p in load_file(path)]
        except Exception as exc:
            _broken(registry, source, exc)
            continue
        for item in found:
            registry.add(item)


def load_builtins(registry: Registry, names: Iterable[str] | None = None) -> None:
    for name in names if names is not None else BUILTINS:
        target = BUILTINS[name]
        module_name, _, attr = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
            found = _found(_instantiate(obj), name, "built-in", target)
        except Exception as exc:  # a broken built-in is a bug, but never a dead worker
            _broken(registry, f"built-in {target}", exc)
            continue
        registry.add(found)


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
