"""The sampler plugin kind: what a sampler is and what it yields.

A sampler has a ``name``, a config validated against its ``config_schema``
(JSON Schema) before it runs, ``init``/``close``, and either ``collect()``
called on an interval (``default_interval`` seconds) or ``stream()`` yielding
batches as they come (``default_interval = None``). The runtime stamps ``ts``
and adds the configured labels, so a sampler only says what it observed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import jsonschema

from flarebus.errors import PluginError
from flarebus.events import MetricSample, StackSample

#: What a sampler yields: metric samples and/or stack samples.
Sample = MetricSample | StackSample


@runtime_checkable
class SamplerPlugin(Protocol):
    """The seam the runtime drives (Sampler below is the convenience base class)."""

    name: str
    default_interval: float | None

    async def init(self) -> None: ...
    async def collect(self) -> Sequence[Sample]: ...
    def stream(self) -> AsyncIterator[Sequence[Sample]]: ...
    async def close(self) -> None: ...


class Sampler:
    """Base class of samplers: keeps the validated config; override collect() or stream()."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "sampler"
    #: seconds between collect() calls; None: a stream sampler (override stream())
    default_interval: ClassVar[float | None] = 10.0
    #: a stream that ends is restarted (with backoff); False: its end is the sampler's end
    restart_on_end: ClassVar[bool] = True
    #: JSON Schema of ``config`` (Draft 2020-12)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    #: command-line flags of `flarebus sample NAME`: (flag, config key, type, help)
    options: ClassVar[tuple[tuple[str, str, type, str], ...]] = ()

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.validate_config()

    def validate_config(self) -> None:
        """Raise PluginError listing every problem of the config (all at once)."""
        validator = jsonschema.Draft202012Validator(self.config_schema)
        errors = sorted(validator.iter_errors(self.config), key=lambda e: list(e.path))
        if errors:
            lines = []
            for error in errors:
                where = ".".join(str(p) for p in error.path)
                lines.append(f"config{'.' + where if where else ''}: {error.message}")
            raise PluginError(self.name, "; ".join(lines), source="sampler config")

    async def init(self) -> None:
        """Open what collect() needs (connections, first counter readings)."""

    async def collect(self) -> Sequence[Sample]:
        raise NotImplementedError(f"sampler {self.name!r} has no collect()")

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        raise NotImplementedError(f"sampler {self.name!r} has no stream()")
        yield []  # pragma: no cover  (makes this an async generator)

    async def close(self) -> None:
        """Release what init() opened."""


def gauge(name: str, value: float, **labels: str) -> MetricSample:
    """A MetricSample without ts (the runtime stamps it) from trusted values."""
    return MetricSample(name, float(value), None, labels)
