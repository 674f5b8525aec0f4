"""flarebus: an event-driven rules engine on NATS.

This package root is the public API, what applications and plugin authors
import::

    from flarebus import Action, Trigger

    class PageOncall(Action):
        name = "page_oncall"
        async def execute(self, trigger: Trigger) -> None: ...

    plugin = PageOncall()

The names are resolved on first use (PEP 562), so ``import flarebus`` costs
nothing a command does not need, and the package root imports no role at
import time. The shared contracts (wire types, bus, config, errors, telemetry,
the embedded server, the plugin API) are the modules beside this one; the
roles are ``flarebus.engine``, ``flarebus.actions`` and ``flarebus.samplers``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # wire types
    "MetricSample": "flarebus.events",
    "StackSample": "flarebus.events",
    "Trigger": "flarebus.events",
    "TriggerGroup": "flarebus.grouping",
    "Frame": "flarebus.frame",
    # publishing samples from an application
    "Publisher": "flarebus.publish",
    "NatsSettings": "flarebus.config",
    "connect": "flarebus.bus",
    # the plugin API
    "Plugin": "flarebus.plugin",
    "Action": "flarebus.plugin",
    "Sink": "flarebus.plugin",
    "Exporter": "flarebus.plugin",
    "Sampler": "flarebus.sampler",
    # errors
    "FlarebusError": "flarebus.errors",
    "ActionError": "flarebus.errors",
    "PluginError": "flarebus.errors",
    "SampleError": "flarebus.errors",
}

__all__ = [
    "Action",
    "ActionError",
    "Exporter",
    "FlarebusError",
    "Frame",
    "MetricSample",
    "NatsSettings",
    "Plugin",
    "PluginError",
    "Publisher",
    "SampleError",
    "Sampler",
    "Sink",
    "StackSample",
    "Trigger",
    "TriggerGroup",
    "__version__",
    "connect",
]

if TYPE_CHECKING:
    from flarebus.bus import connect
    from flarebus.config import NatsSettings
    from flarebus.errors import ActionError, FlarebusError, PluginError, SampleError
    from flarebus.events import MetricSample, StackSample, Trigger
    from flarebus.frame import Frame
    from flarebus.grouping import TriggerGroup
    from flarebus.plugin import Action, Exporter, Plugin, Sink
    from flarebus.publish import Publisher
    from flarebus.sampler import Sampler


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flarebus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
