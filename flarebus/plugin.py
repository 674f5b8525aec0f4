"""The plugin API: four kinds as typed Protocols, one lifecycle, and small base classes.

The kinds are named after the Go plugin guides flarebus grew from, with the
same arguments in Python spelling:

- action   ``Execute(ctx, metricName, value, threshold, duration)`` -> ``async execute(trigger)``;
           the Trigger carries ``metric_name``, ``value``, ``threshold`` and ``duration``.
- sink     ``Notify(ruleName, msg)`` -> ``notify(rule_name, msg)``; usable wherever an action is.
- sampler  produces metric or stack samples: ``collect()`` on an interval or ``stream()``;
           its base class is ``flarebus.sampler.Sampler``, its runtime ``flarebus.samplers``.
- exporter ``Export(root Frame)`` -> ``export(root)``; writes or sends a flamegraph.
- visualization  "custom visualizations for the UI": ``render(panel)`` -> HTML for a panel of
           the web console, from a stack source's Frame tree or a rule's series (``accepts``).

Every kind has the same lifecycle, defined once on :class:`Plugin`: the config
is validated against ``config_schema`` first (``flarebus.plugin_config``), then
``async init(config)``, ``validate_config()`` for what a schema cannot say, the
kind's work, and ``async close()``. :func:`open_plugin` and :func:`close_plugin`
are that lifecycle for whoever hosts a plugin (the worker's host, the sampler
runtime), so no host re-implements it.

Subclassing a base class is optional: a plugin is recognised by the Protocol
of its kind (they are ``runtime_checkable``), so a duck-typed object with plain
``def`` methods works too; its results are awaited only when they are
awaitable (:func:`maybe_await`). A new kind is a Literal value, a Protocol
and an entry in ``PROTOCOLS``; the registry and the lifecycle need no change
(``visualization`` came that way).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypeVar,
    overload,
    runtime_checkable,
)

from flarebus.events import MetricSample, StackSample, Trigger
from flarebus.frame import Frame
from flarebus.grouping import TriggerGroup

if TYPE_CHECKING:
    from flarebus.summary import SeriesInfo

Kind = Literal["action", "sink", "sampler", "exporter", "visualization"]
#: What a visualization draws: a stack source's Frame tree, or a rule's series.
PanelInput = Literal["frames", "series"]

#: What a plugin may declare as its config: a msgspec Struct type or a JSON Schema (a dict).
ConfigSchema = type | Mapping[str, Any] | None

#: What a sampler yields: metric samples and/or stack samples.
Sample = MetricSample | StackSample

T = TypeVar("T")


# The Protocols name only what a host calls; init/validate_config/close are optional
# (a duck-typed plugin may leave them out), so they are not members.


@runtime_checkable
class ActionPlugin(Protocol):
    """Runs when a rule fires or resolves. Raise to fail (the worker retries)."""

    @property
    def name(self) -> str: ...

    async def execute(self, trigger: Trigger) -> None: ...


@runtime_checkable
class SinkPlugin(Protocol):
    """A notification channel: one message for one rule."""

    @property
    def name(self) -> str: ...

    async def notify(self, rule_name: str, msg: str) -> None: ...


@runtime_checkable
class GroupAware(Protocol):
    """An action or sink that takes a whole group at once (a rule with ``group:``).

    Optional: a plugin without it is still run for grouped rules: an action's
    ``execute`` once per alert of the group, a sink's ``notify`` once with the
    group as one message (``flarebus.grouping.group_text``).
    """

    async def execute_group(self, group: TriggerGroup) -> None: ...


@runtime_checkable
class SamplerPlugin(Protocol):
    """Samples on an interval (``collect()``) or, with ``default_interval`` None, a ``stream()``."""

    @property
    def name(self) -> str: ...

    @property
    def default_interval(self) -> float | None: ...

    async def collect(self) -> Sequence[Sample]: ...

    def stream(self) -> AsyncIterator[Sequence[Sample]]: ...


@runtime_checkable
class ExporterPlugin(Protocol):
    """Writes a flamegraph, or sends it on."""

    @property
    def name(self) -> str: ...

    async def export(self, root: Frame) -> Any: ...


class Panel:
    """What a visualization is handed: a title, and the Frame tree or the series it draws."""

    __slots__ = ("frame", "rule", "series", "title", "unit")

    def __init__(self, title: str, *, frame: Frame | None = None, unit: str = "samples",
                 series: Sequence[SeriesInfo] = (), rule: str | None = None) -> None:
        self.title = title
        self.frame = frame
        self.unit = unit
        self.series = series
        self.rule = rule


@runtime_checkable
class VisualizationPlugin(Protocol):
    """Renders one panel of the web console as an HTML fragment (SVG inside is fine).

    The fragment is inserted as is: escape every name and label in it
    (``html.escape``), they are user text. It may be ``async def``.
    """

    @property
    def name(self) -> str: ...

    @property
    def accepts(self) -> PanelInput: ...

    def render(self, panel: Panel) -> Any: ...


#: Any plugin, typed: what the registry holds.
AnyPlugin = ActionPlugin | SinkPlugin | SamplerPlugin | ExporterPlugin | VisualizationPlugin

#: Each kind's Protocol, in the order an undeclared kind is recognised.
PROTOCOLS: dict[Kind, type] = {
    "action": ActionPlugin, "sink": SinkPlugin, "exporter": ExporterPlugin,
    "sampler": SamplerPlugin, "visualization": VisualizationPlugin,
}
KINDS: tuple[Kind, ...] = tuple(PROTOCOLS)
#: What each kind must have, for error messages.
NEEDS: dict[Kind, str] = {
    "action": "execute(trigger)", "sink": "notify(rule_name, msg)", "exporter": "export(root)",
    "sampler": "default_interval, collect() and stream()",
    "visualization": "accepts and render(panel)",
}


class Plugin:
    """The lifecycle every kind shares: ``init(config)`` keeps the validated config.

    Set ``config_schema`` to a msgspec Struct type (``self.config`` is then an
    instance of it) or to a JSON Schema dict (``self.config`` stays a dict).
    ``init`` and ``close`` are async so a plugin can open and release
    connections without a thread; override them and call ``super().init(config)``.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Kind]
    config_schema: ClassVar[ConfigSchema] = None
    #: Default timeout (seconds) and concurrency limit; the config file's ``plugins:`` wins.
    timeout: ClassVar[float | None] = None
    concurrency: ClassVar[int | None] = None

    config: Any = None

    async def init(self, config: Any) -> None:
        """Receive the validated config; open what the plugin needs."""
        self.config = config

    def validate_config(self) -> None:
        """Checks the schema cannot express (raise ValueError with a readable message)."""

    async def close(self) -> None:
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


class Visualization(Plugin):
    """Base for visualizations: set ``accepts``, implement ``render(panel)`` -> HTML."""

    kind: ClassVar[Kind] = "visualization"
    accepts: ClassVar[PanelInput] = "frames"

    def render(self, panel: Panel) -> str:
        raise NotImplementedError


def a_kind(kind: str) -> str:
    """"an action", "a sink": a kind with its article, for messages."""
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind}"


def kind_of(plugin: object) -> Kind | None:
    """The kind a plugin declares (``kind``), else the first kind whose Protocol it satisfies.

    A declared kind counts only when the plugin has what that kind needs, so a
    found plugin always satisfies the Protocol of its kind.
    """
    declared = getattr(plugin, "kind", None)
    if declared in PROTOCOLS:
        return declared if isinstance(plugin, PROTOCOLS[declared]) else None
    for kind, protocol in PROTOCOLS.items():
        if isinstance(plugin, protocol):
            return kind
    return None


@overload
async def maybe_await(value: Awaitable[T]) -> T: ...
@overload
async def maybe_await(value: T) -> T: ...


async def maybe_await(value: Any) -> Any:
    """The result of a plugin method: awaited when it is awaitable (``async def``), else as is."""
    if inspect.isawaitable(value):
        return await value
    return value


async def open_plugin(plugin: object, config: Any) -> None:
    """The lifecycle's start: ``init(config)`` (config validated), then ``validate_config()``.

    Either may be ``async def`` or plain ``def`` (run on the event loop: keep a
    plain one quick), or missing on a duck-typed plugin.
    """
    init = getattr(plugin, "init", None)
    if callable(init):
        await maybe_await(init(config))
    check = getattr(plugin, "validate_config", None)
    if callable(check):
        await maybe_await(check())


async def close_plugin(plugin: object) -> None:
    """The lifecycle's end: ``close()``, awaited when async, skipped when missing."""
    close = getattr(plugin, "close", None)
    if callable(close):
        await maybe_await(close())


def message_for(trigger: Trigger) -> str:
    """One human line about a trigger, as a sink sends it (``Notify(ruleName, msg)``'s msg)."""
    summary = trigger.annotations.get("summary")
    if summary:
        return summary
    labels = ", ".join(f"{k}={v}" for k, v in sorted(trigger.labels.items()))
    where = f" {{{labels}}}" if labels else ""
    return (f"[{trigger.state}] {trigger.rule}: {trigger.metric_name}{where} = {trigger.value:g} "
            f"({trigger.threshold}, for {trigger.duration:g}s)")
