"""``webhook`` and ``slack``: notification sinks (``Notify(ruleName, msg)`` of the Go guides)."""

from __future__ import annotations

from typing import Any

from flarebus.actions.builtins.http import HttpSink


class WebhookSink(HttpSink):
    """POSTs ``{"rule": ..., "message": ...}`` to the URL."""

    name = "webhook"

    def body(self, rule_name: str, msg: str) -> dict[str, Any]:
        return {"rule": rule_name, "message": msg}


class SlackSink(HttpSink):
    """POSTs a Slack-compatible incoming-webhook body (``{"text": ...}``)."""

    name = "slack"

    def body(self, rule_name: str, msg: str) -> dict[str, Any]:
        return {"text": f"*{rule_name}*: {msg}"}
