"""An installable flarebus plugin: found through the ``flarebus.plugins`` entry point group."""

from __future__ import annotations

import msgspec

from flarebus.actions import Action
from flarebus.events import Trigger


class HelloConfig(msgspec.Struct, forbid_unknown_fields=True):
    greeting: str = "hello"


class HelloAction(Action):
    """Appends ``<greeting> <rule>`` to ``seen`` (the test reads it back)."""

    name = "ep_hello"
    config_schema = HelloConfig

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def execute(self, trigger: Trigger) -> None:
        self.seen.append(f"{self.config.greeting} {trigger.rule}")
