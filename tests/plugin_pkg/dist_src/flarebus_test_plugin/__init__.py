"""An installable flarebus plugin package: an action and a sampler, found through the
``flarebus.plugins`` entry point group (one group for every kind)."""

from __future__ import annotations

import msgspec

from flarebus import Action
from flarebus.events import MetricSample, Trigger
from flarebus.sampler import Sampler, gauge


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


class CounterSampler(Sampler):
    """A sampler plugin: ``ep.counter`` counting its collections, from ``start`` on."""

    name = "ep_counter"
    default_interval = 1.0
    config_schema = {"type": "object", "additionalProperties": False,
                     "properties": {"start": {"type": "integer"}}}

    async def init(self, config: dict[str, int]) -> None:
        await super().init(config)
        self.count = config.get("start", 0)

    async def collect(self) -> list[MetricSample]:
        self.count += 1
        return [gauge("ep.counter", self.count)]


class ShadowSystem(CounterSampler):
    """Named like the built-in ``system`` sampler; not declared in pyproject.toml: the clash
    test declares it as an extra entry point, to see the clash reported."""

    name = "system"
