"""flarebus action workers: the worker, the plugin host, and the built-in actions and sinks.

The plugin API a plugin author uses is the package root, ``from flarebus import
Action, Sink, Trigger`` (defined in ``flarebus.plugin``); see docs/plugins.md.
This package is the process that runs plugins, and imports nothing until used.
"""
