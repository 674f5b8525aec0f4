"""``webhook`` and ``slack``: notification sinks (``Notify(ruleName, msg)`` of the Go guides).

For a grouped rule (``group:``) both send one request per group notification:
the webhook Alertmanager's webhook JSON (version 4, flarebus.amwebhook), so a
receiver written for Alertmanager works unchanged; Slack one message listing
the alerts.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from flarebus.actions.builtins.http import HttpConfig, HttpSink
from flarebus.amwebhook import webhook_body
from flarebus.events import encoder
from flarebus.grouping import TriggerGroup, group_lines


class WebhookConfig(HttpConfig):
    #: Alertmanager's webhook fields flarebus has no source for: the receiver's name, the
    #: externalURL, each alert's generatorURL (``{rule}`` is filled in), and max_alerts.
    receiver: str = "flarebus"
    external_url: str = ""
    generator_url: str = ""
    max_alerts: Annotated[int, msgspec.Meta(ge=0)] = 0


class WebhookSink(HttpSink):
    """POSTs ``{"rule": ..., "message": ...}`` per trigger; Alertmanager's JSON per group."""

    name = "webhook"
    config_schema = WebhookConfig

    def body(self, rule_name: str, msg: str) -> dict[str, Any]:
        return {"rule": rule_name, "message": msg}

    async def execute_group(self, group: TriggerGroup) -> None:
        c = self.config
        await self.send(encoder.encode(webhook_body(
            group, receiver=c.receiver, external_url=c.external_url,
            generator_url=c.generator_url, max_alerts=c.max_alerts)))


class SlackSink(HttpSink):
    """POSTs a Slack-compatible incoming-webhook body (``{"text": ...}``)."""

    name = "slack"

    def body(self, rule_name: str, msg: str) -> dict[str, Any]:
        return {"text": f"*{rule_name}*: {msg}"}

    async def execute_group(self, group: TriggerGroup) -> None:
        """One message for the group: the title in bold, then a line per alert."""
        title, lines = group_lines(group)
        await self.send(encoder.encode({"text": "\n".join([f"*{title}*", *lines])}))
