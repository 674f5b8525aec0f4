"""``flamegraph``: when a rule fires, export the flamegraph of the last N seconds with it.

The action keeps a rolling window of every ``stacks.<source>`` on the worker's
connection from the moment the worker starts, so the graph shows what led up
to the alert. The source is the action config's ``source``, else the trigger's
``source`` label, else the tail of a ``stacks.<source>`` metric name (what stack
rules put there). The graph goes to a file in ``dir`` (default
``$FLAMEGRAPH_DIR``, else ``<tmp>/flarebus-flamegraphs``) or, with ``subject``,
is published on that subject; either way its location is in the log line.
Resolved triggers are skipped unless ``on`` lists them.

    actions: [{plugin: flamegraph, config: {seconds: 60, format: html}}]
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from flarebus.errors import ActionError
from flarebus.events import Trigger, is_token
from flarebus.plugin import Action
from flarebus.samplers.collect import StackWindows
from flarebus.samplers.exporters import exporter

log = logging.getLogger("flarebus.actions.flamegraph")

MAX_SECONDS = 3600.0


class FlamegraphConfig(msgspec.Struct, forbid_unknown_fields=True):
    source: str | None = None
    seconds: Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)] = 30.0
    format: Literal["svg", "html", "folded", "speedscope"] = "html"
    dir: str | None = None
    #: publish the graph here instead of writing a file ({rule}, {source} are filled in)
    subject: str | None = None
    #: seconds to wait for stacks when none were seen in the window yet
    wait: Annotated[float, msgspec.Meta(ge=0)] = 5.0
    on: list[Literal["firing", "resolved"]] = msgspec.field(default_factory=lambda: ["firing"])
    stacks_prefix: str = "stacks"


def default_dir() -> str:
    return os.environ.get("FLAMEGRAPH_DIR") or str(Path(tempfile.gettempdir())
                                                    / "flarebus-flamegraphs")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:100] or "_"


class FlamegraphAction(Action):
    name = "flamegraph"
    config_schema = FlamegraphConfig

    nc: Any = None
    windows: StackWindows | None = None

    def use_nats(self, nc: Any) -> None:
        """The worker hands over its connection; stacks are windowed from init() on."""
        self.nc = nc

    async def init(self, config: FlamegraphConfig) -> None:
        await super().init(config)
        if self.nc is not None and self.windows is None:
            self.windows = await _shared_windows(self.nc, config.stacks_prefix,
                                                 config.seconds + 5)

    def validate_config(self) -> None:
        if self.config.source is not None and not is_token(self.config.source):
            raise ValueError(f"source {self.config.source!r} is not a subject token")
        if self.config.subject is not None:
            subject = self.config.subject.format(rule="r", source="s")
            if not all(is_token(part) for part in subject.split(".")):
                raise ValueError(f"subject {self.config.subject!r} is not a publish subject")

    def source_of(self, trigger: Trigger) -> str:
        if self.config.source:
            return str(self.config.source)
        if trigger.labels.get("source"):
            return trigger.labels["source"]
        prefix = f"{self.config.stacks_prefix}."
        if trigger.metric_name.startswith(prefix):
            return trigger.metric_name[len(prefix):].split(".")[0]
        raise ActionError(self.name, f"rule {trigger.rule!r}: no stack source (set the action's "
                                     "config source, or use it with a stack rule)",
                          permanent=True)

    async def execute(self, trigger: Trigger) -> None:
        if trigger.state not in self.config.on:
            log.info("flamegraph: rule %s %s: skipped (on: %s)", trigger.rule, trigger.state,
                     ",".join(self.config.on))
            return
        if self.windows is None:
            raise ActionError(self.name, "no NATS connection (run it in a worker)",
                              permanent=True)
        source = self.source_of(trigger)
        seconds = self.config.seconds
        tree = self.windows.tree(source, seconds)
        if tree.value == 0 and self.config.wait > 0:
            await self.windows.wait_for_any(self.config.wait)
            tree = self.windows.tree(source, seconds)
        if tree.value == 0:
            raise ActionError(self.name, f"no stacks from {source!r} in the last {seconds:g}s "
                                         f"(is a stack sampler publishing on "
                                         f"{self.config.stacks_prefix}.{source}?)")
        title = f"{trigger.rule}: {source}, {seconds:g}s before {time.strftime('%H:%M:%S')}"
        out = exporter(self.config.format, title=title, unit=self.windows.unit(source))
        data = out.export(tree)
        if self.config.subject:
            subject = self.config.subject.format(rule=trigger.rule, source=source)
            await self.nc.publish(subject, data, headers={
                "Content-Type": out.media_type, "Flarebus-Trigger": trigger.id})
            location = f"nats:{subject}"
        else:
            directory = Path(self.config.dir or default_dir())
            directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(trigger.at))
            path = directory / f"{_safe(trigger.rule)}_{_safe(source)}_{stamp}{out.suffix}"
            path.write_bytes(data)
            location = str(path)
        log.info("flamegraph: rule %s fired: %s over %gs (%g %s) -> %s", trigger.rule, source,
                 seconds, tree.value, self.windows.unit(source), location)

    async def close(self) -> None:
        if self.windows is not None:
            windows, self.windows = self.windows, None
            await _release(windows)


#: one subscription per connection and prefix, shared by every instance (rules' own configs
#: make more instances): (id(nc), prefix) -> [windows, users]
_SHARED: dict[tuple[int, str], list[Any]] = {}


async def _shared_windows(nc: Any, prefix: str, span: float) -> StackWindows:
    """The shared StackWindows, its span grown to the longest any instance needs."""
    key = (id(nc), prefix)
    entry = _SHARED.get(key)
    if entry is None:
        entry = _SHARED[key] = [await StackWindows(nc, span=span, prefix=prefix).start(), 0]
    windows: StackWindows = entry[0]
    entry[1] += 1
    if span > windows.store.span:
        windows.store.span = span
        for window in windows.store.windows.values():
            window.span = span
    return windows


async def _release(windows: StackWindows) -> None:
    for key, entry in list(_SHARED.items()):
        if entry[0] is windows:
            entry[1] -= 1
            if entry[1] <= 0:
                del _SHARED[key]
                await windows.stop()


plugin = FlamegraphAction()
