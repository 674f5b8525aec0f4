"""The plugin API: four kinds, as typed Protocols, plus small base classes for convenience.

The kinds are named after the Go plugin guides flarebus grew from, with the
same arguments in Python spelling:

- action   ``Execute(ctx, metricName, value, threshold, duration)`` -> ``async execute(trigger)``;
           the Trigger carries ``metric_name``, ``value``, ``threshold`` and ``duration``.
- sink     ``Notify(ruleName, msg)`` -> ``notify(rule_name, msg)``; usable wherever an action is.
- sampler  produces metric or stack samples: ``collect()`` on an interval or ``stream()``;
           the class and its runtime live in ``samplers/`` (re-exported here).
- exporter ``Export(root Frame)`` -> ``export(root)``; writes or sends a flamegraph.

Every method may be ``async def`` or plain ``def``: the worker runs plain
(blocking) ones in a bounded thread pool so they cannot stall the event loop.
A plugin is found by duck typing (the Protocols are ``runtime_checkable``);
subclassing a base class is optional and only saves typing ``name``/``init``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from flarebus.events import Trigger
from flarebus.sampler import Sampler as Sampler  # one sampler kind: the runtime's
from flarebus.sampler import SamplerPlugin as SamplerPlugin

Kind = Literal["action", "sink", "sampler", "exporter"]
KINDS: tuple[Kind, ...] = ("action", "sink", "sampler", "exporter")

#: What a plugin may declare as its config: a msgspec Struct type or a JSON Schema (a dict).
ConfigSchema = type | Mapping[str, Any] | None


@runtime_checkable
class Frame(Protocol):
    """A flamegraph node (the samplers' tree type satisfies it): inclusive ``value``."""

    name: str
    value: float
    children: Sequence[Frame]


@runtime_checkable
class ActionPlugin(Protocol):
    """Runs when a rule fires or resolves. Raise to fail (the worker retries)."""

    name: str

    async def execute(self, trigger: Trigger) -> None: ...


@runtime_checkable
class SinkPlugin(Protocol):
    """A notification channel: one message for one rule."""

    name: str

    async def notify(self, rule_name: str, msg: str) -> None: ...


@runtime_checkable
class ExporterPlugin(Protocol):
    """Writes a flamegraph, or sends it on."""

    name: str

    async def export(self, root: Frame) -> Any: ...


#: The method that makes a plugin each kind, in the order kinds are recognised.
KIND_METHODS: dict[Kind, str] = {
    "action": "execute", "sink": "notify", "exporter": "export", "sampler": "collect",
}


class Plugin:
    """Shared lifecycle: ``init(config)`` stores the validated config, ``close()`` does nothing.

    Set ``config_schema`` to a msgspec Struct type (``self.config`` is then an
    instance of it) or to a JSON Schema dict (``self.config`` stays a dict).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Kind]
    config_schema: ClassVar[ConfigSchema] = None
    #: Default timeout (seconds) and concurrency limit; the config file's ``plugins:`` wins.
    timeout: ClassVar[float | None] = None
    concurrency: ClassVar[int | None] = None

    config: Any = None

    def init(self, config: Any) -> None:
        self.config = config

    def validate_config(self) -> None:
        """Checks the schema cannot express (raise ValueError with a readable message)."""

    def close(self) -> None:
        """Release what ``init`` acquired."""


class Action(Plugin):
    """Base for actions: implement ``async def execute(self, trigger)``."""

    kind: ClassVar[Kind] = "action"

    async def execute(self, trigger: Trigger) -> None:
        raise NotImplementedError


class Sink(Plugin):
    """Base for sinks: implement ``notify(rule_name, msg)``; ``message`` formats the trigger."""

    kind: ClassVar[Kind] = "sink"

    async def notify(self, rule_name: str, msg: str) -> None:
        raise NotImplementedError

    def message(self, trigger: Trigger) -> str:
        """The text a sink sends for a trigger: the summary annotation, else a generated line."""
        return message_for(trigger)


class Exporter(Plugin):
    """Base for exporters: implement ``export(root)``."""

    kind: ClassVar[Kind] = "exporter"

    async def export(self, root: Frame) -> Any:
        raise NotImplementedError


def kind_of(plugin: object) -> Kind | None:
    """The kind a plugin declares (``kind``), else the first kind whose method it has."""
    declared = getattr(plugin, "kind", None)
    if declared in KINDS:
        return declared
    for kind, method in KIND_METHODS.items():
        if callable(getattr(plugin, method, None)):
            return kind
    return None


def is_async(func: Any) -> bool:
    """True for ``async def`` functions (bound or not)."""
    return inspect.iscoroutinefunction(func)


def message_for(trigger: Trigger) -> str:
    """One human line about a trigger, as a sink sends it (``Notify(ruleName, msg)``'s msg)."""
    summary = trigger.annotations.get("summary")
    if summary:
        return summary
    labels = ", ".join(f"{k}={v}" for k, v in sorted(trigger.labels.items()))
    where = f" {{{labels}}}" if labels else ""
    return (f"[{trigger.state}] {trigger.rule}: {trigger.metric_name}{where} = {trigger.value:g} "
            f"({trigger.threshold}, for {trigger.duration:g}s)")
