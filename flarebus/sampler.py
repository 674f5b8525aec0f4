"""The sampler plugin kind: what a sampler is and what it yields.

A sampler is a :class:`~flarebus.plugin.Plugin` like every other kind: a
``name``, a config validated against its ``config_schema`` before it runs,
``async init(config)``/``async close()``, and either ``collect()`` called on an
interval (``default_interval`` seconds) or ``stream()`` yielding batches as
they come (``default_interval = None``). The runtime stamps ``ts`` and adds the
configured labels, so a sampler only says what it observed. ``init`` may run
again after a failure (the runtime closes, backs off and re-initialises), so it
opens what ``close`` released.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from flarebus.events import MetricSample
from flarebus.plugin import Kind, Plugin
from flarebus.plugin import Sample as Sample
from flarebus.plugin import SamplerPlugin as SamplerPlugin


class Sampler(Plugin):
    """Base class of samplers: override collect() (an interval) or stream()."""

    kind: ClassVar[Kind] = "sampler"
    #: seconds between collect() calls; None: a stream sampler (override stream())
    default_interval: ClassVar[float | None] = 10.0
    #: a stream that ends is restarted (with backoff); False: its end is the sampler's end
    restart_on_end: ClassVar[bool] = True
    #: command-line flags of `flarebus sample NAME`: (flag, config key, type, help)
    options: ClassVar[tuple[tuple[str, str, type, str], ...]] = ()

    async def collect(self) -> Sequence[Sample]:
        raise NotImplementedError(f"sampler {self.name!r} has no collect()")

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        raise NotImplementedError(f"sampler {self.name!r} has no stream()")
        yield []  # pragma: no cover  (makes this an async generator)


def gauge(name: str, value: float, **labels: str) -> MetricSample:
    """A MetricSample without ts (the runtime stamps it) from trusted values."""
    return MetricSample(name, float(value), None, labels)
