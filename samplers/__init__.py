"""flarebus samplers: the sampler runtime and built-in samplers, stack aggregation, exporters.

- ``samplers.runtime.run_samplers(nc, specs, stop=...)``: run samplers (``flarebus sample``,
  ``flarebus up``); ``samplers.base.Sampler``: the base class of your own.
- ``samplers.stack.start(source=..., nats=...)``: profile your own Python program.
- ``samplers.aggregate.Frame``: flamegraph trees; ``samplers.exporters``: folded,
  speedscope, SVG and HTML output.

Names are imported lazily so ``import samplers.stack`` in a user's program stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Sampler": "samplers.base",
    "Frame": "samplers.aggregate",
    "build": "samplers.aggregate",
    "run_samplers": "samplers.runtime",
    "SamplerRunner": "samplers.runtime",
    "create_sampler": "samplers.registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samplers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
