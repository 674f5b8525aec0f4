"""flarebus samplers: the sampler runtime and built-in samplers, stack aggregation, exporters.

- ``flarebus.samplers.runtime.run_samplers(nc, specs, stop=...)``: run samplers
  (``flarebus sample``, ``flarebus up``); ``flarebus.Sampler``: the base class of your own;
  samplers are found by name in the one plugin registry, ``flarebus.registry``.
- ``flarebus.samplers.stack.start(source=..., nats=...)``: profile your own Python program.
- ``flarebus.samplers.aggregate.Frame``: flamegraph trees; ``flarebus.samplers.exporters``: folded,
  speedscope, SVG and HTML output.

Names are imported lazily so ``import flarebus.samplers.stack`` in a user's program stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Sampler": "flarebus.sampler",
    "Frame": "flarebus.samplers.aggregate",
    "build": "flarebus.samplers.aggregate",
    "run_samplers": "flarebus.samplers.runtime",
    "SamplerRunner": "flarebus.samplers.runtime",
    "build_samplers": "flarebus.samplers.runtime",
    "collect_once": "flarebus.samplers.runtime",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'samplers' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
