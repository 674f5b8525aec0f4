"""``log``: one structured line per trigger, the default action when a rule names none."""

from __future__ import annotations

import logging
from typing import Literal

import msgspec

from flarebus.events import Trigger, encoder
from flarebus.grouping import TriggerGroup
from flarebus.plugin import Action

log = logging.getLogger("flarebus.actions.log")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class LogConfig(msgspec.Struct, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


def logfmt(trigger: Trigger) -> str:
    """``rule=high-cpu state=firing metric_name=cpu.usage value=93.5 threshold="> 80" ...``"""
    fields = {"rule": trigger.rule, "state": trigger.state, "severity": trigger.severity,
              "metric_name": trigger.metric_name, "value": trigger.value,
              "threshold": trigger.threshold, "duration": trigger.duration,
              "labels": trigger.labels, "id": trigger.id}
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:g}"
        elif isinstance(value, str) and value and all(
                c.isalnum() or c in "._-:" for c in value):
            text = value
        else:
            text = encoder.encode(value).decode()
        parts.append(f"{key}={text}")
    return " ".join(parts)


class LogAction(Action):
    """Logs the trigger on the ``flarebus.actions.log`` logger."""

    name = "log"
    config_schema = LogConfig

    async def init(self, config: LogConfig) -> None:
        await super().init(config)
        self.level = _LEVELS[config.level]

    async def execute(self, trigger: Trigger) -> None:
        line = encoder.encode(trigger).decode() if self.config.format == "json" else logfmt(trigger)
        log.log(self.level, "trigger %s", line)

    async def execute_group(self, group: TriggerGroup) -> None:
        """One record per group: a logfmt head (rule, key, status, counts), then each alert's
        logfmt line (or the group as one JSON line)."""
        if self.config.format == "json":
            log.log(self.level, "group %s", encoder.encode(group).decode())
            return
        head = (f"rule={group.rule} status={group.status} firing={len(group.firing)} "
                f"resolved={len(group.resolved)} notification={group.number} "
                f"labels={encoder.encode(group.labels).decode()}")
        lines = "".join(f"\n  {logfmt(t)}" for t in group.alerts)
        log.log(self.level, "group %s%s", head, lines)
