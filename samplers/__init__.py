"""flarebus samplers: the sampler runtime and built-in samplers, stack aggregation, exporters.

- ``flarebus.samplers.runtime.run_samplers(nc, specs, stop=...)``: run samplers
  (``flarebus sample``, ``flarebus up``); ``flarebus.Sampler``: the base class of your own;
  samplers are found by name in the one plugin registry, ``flarebus.registry``.
- ``flarebus.samplers.stack.start(source=..., nats=...)``: profile your own Python program.
- ``flarebus.samplers.aggregate``: building, merging and windowing ``flarebus.Frame`` trees;
  ``flarebus.samplers.exporters``: folded, speedscope, SVG and HTML output.

This package imports nothing itself, so ``from flarebus.samplers import stack`` in a
user's program loads the stack sampler and nothing else.
"""
