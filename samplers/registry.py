"""Which sampler a name means: the built-ins, and samplers other packages provide.

Built-ins are named by import path so ``flarebus sample system`` does not import
the prometheus or py-spy code. Third-party samplers come from the Python entry
point group ``flarebus.plugins`` (objects or classes whose ``kind`` is
"sampler"); entry points are looked up first, then the built-ins: the order
docs/plugins.md gives for every plugin kind, so one rule answers "which one
runs" for actions and samplers alike.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from flarebus.errors import PluginError
from flarebus.sampler import Sampler

log = logging.getLogger("flarebus.samplers")

ENTRY_POINT_GROUP = "flarebus.plugins"

BUILTIN_SAMPLERS: dict[str, str] = {
    "system": "flarebus.samplers.system:SystemSampler",
    "process": "flarebus.samplers.system:ProcessSampler",
    "prometheus": "flarebus.samplers.prometheus:PrometheusSampler",
    "stack": "flarebus.samplers.stack:PySpySampler",
    "stdin": "flarebus.samplers.command:StdinSampler",
    "exec": "flarebus.samplers.command:ExecSampler",
}


def _load(path: str) -> type[Sampler]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def _entry_point_samplers() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party package must not hide the built-ins
            log.warning("entry point %s: cannot load: %s", ep.name, exc)
            continue
        if getattr(obj, "kind", None) == "sampler":
            found[getattr(obj, "name", None) or ep.name] = obj
    return found


def sampler_class(name: str) -> type[Sampler]:
    """The sampler class called ``name``; PluginError naming the choices otherwise."""
    plugins = _entry_point_samplers()
    if name in plugins:
        obj = plugins[name]
        return obj if isinstance(obj, type) else type(obj)
    if name in BUILTIN_SAMPLERS:
        return _load(BUILTIN_SAMPLERS[name])
    known = sorted({*BUILTIN_SAMPLERS, *plugins})
    raise PluginError(name, f"no such sampler (known: {', '.join(known)})")


def create_sampler(name: str, config: Mapping[str, Any] | None = None) -> Sampler:
    """A configured sampler instance (its config validated now, before anything runs)."""
    return sampler_class(name)(config or {})


def sampler_names() -> list[str]:
    return sorted({*BUILTIN_SAMPLERS, *_entry_point_samplers()})
