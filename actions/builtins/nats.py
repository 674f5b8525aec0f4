"""``nats``: republish the trigger to another subject, on the worker's own connection.

The subject is a template (``{rule}``, ``{state}``, ``{severity}``); with
``jetstream: true`` the publish waits for the stream's acknowledgement (and
carries the trigger id as ``Nats-Msg-Id``, so a retried action is deduplicated).
"""

from __future__ import annotations

from typing import Any

import msgspec

from flarebus.bus import MSG_ID_HEADER
from flarebus.errors import ActionError
from flarebus.events import Trigger, encoder, is_token
from flarebus.plugin import Action
from flarebus.telemetry import inject_headers


class NatsConfig(msgspec.Struct, forbid_unknown_fields=True):
    subject: str = "notifications.{rule}"
    jetstream: bool = False


class NatsAction(Action):
    name = "nats"
    config_schema = NatsConfig

    nc: Any = None

    def use_nats(self, nc: Any) -> None:
        """The worker hands over its connection (an optional lifecycle hook)."""
        self.nc = nc

    def validate_config(self) -> None:
        subject = self.subject_for("rule", "firing", "info")
        if not all(is_token(part) for part in subject.split(".")):
            raise ValueError(f"subject {self.config.subject!r} is not a valid publish subject")

    def subject_for(self, rule: str, state: str, severity: str) -> str:
        return str(self.config.subject).format(rule=rule, state=state, severity=severity)

    async def execute(self, trigger: Trigger) -> None:
        if self.nc is None:
            raise ActionError(self.name, "no NATS connection (run it in a worker)",
                              permanent=True)
        subject = self.subject_for(trigger.rule, trigger.state, trigger.severity)
        headers = inject_headers() or {}
        data = encoder.encode(trigger)
        if self.config.jetstream:
            headers[MSG_ID_HEADER] = trigger.id
            await self.nc.jetstream().publish(subject, data, headers=headers)
        else:
            await self.nc.publish(subject, data, headers=headers or None)
