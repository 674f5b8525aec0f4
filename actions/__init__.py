"""flarebus action workers and the plugin API.

Write a plugin by subclassing one of the convenience base classes (or by
duck typing the Protocols) and expose it as a module-level ``plugin`` in a
``PLUGIN_DIR`` file, or as an entry point in the ``flarebus.plugins`` group::

    from flarebus.actions import Action
    from flarebus.events import Trigger

    class PageOncall(Action):
        name = "page_oncall"
        async def execute(self, trigger: Trigger) -> None: ...

    plugin = PageOncall()

See docs/plugins.md.
"""

from flarebus.errors import ActionError
from flarebus.plugin import (
    Action,
    ActionPlugin,
    Exporter,
    ExporterPlugin,
    Frame,
    Kind,
    Plugin,
    SamplerPlugin,
    Sink,
    SinkPlugin,
    kind_of,
    message_for,
)
from flarebus.sampler import Sampler

__all__ = [
    "Action",
    "ActionError",
    "ActionPlugin",
    "Exporter",
    "ExporterPlugin",
    "Frame",
    "Kind",
    "Plugin",
    "Sampler",
    "SamplerPlugin",
    "Sink",
    "SinkPlugin",
    "kind_of",
    "message_for",
]
