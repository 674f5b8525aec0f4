"""``alertmanager``: post each trigger as an alert to an Alertmanager's ``/api/v2/alerts``.

For teams that keep Alertmanager as their notifier (its routes, receivers,
grouping, silences): flarebus evaluates, Alertmanager notifies. ``config.url``
is the Alertmanager's base URL (``http://alertmanager:9093``; the path is
added). An alert carries:

- ``labels``: the trigger's labels, ``alertname`` = the rule, ``severity``;
- ``annotations``: the trigger's, plus ``value`` and ``threshold`` when the rule
  set none of those names;
- ``startsAt``: when the series started firing; a resolved trigger also sends
  ``endsAt`` = when it resolved, which resolves the alert in Alertmanager;
- a firing one sends ``endsAt`` = its time + ``firing_ends_after`` (default
  24h). Alertmanager resolves an alert by itself once ``endsAt`` passes (without
  one, after its ``resolve_timeout``, 5m by default), and Prometheus keeps an
  alert alive by re-sending it; flarebus sends a firing alert once (and at each
  ``repeat:``), so a rule that may fire for longer than ``firing_ends_after``
  should ``repeat`` more often than that;
- ``generatorURL``: ``generator_url`` with ``{rule}`` filled in (a link to the
  rule in your repository or console).

It is an HTTP action like ``http``: same address policy (loopback allowed, link-local
and metadata refused, private networks with ``allow_private``, all operator-only
keys), redirects not followed, 4xx other than 408/425/429 permanent.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

from flarebus.actions.builtins.http import HttpConfig, HttpPoster
from flarebus.durations import Seconds
from flarebus.events import Trigger, encoder
from flarebus.plugin import Action

ALERTS_PATH = "/api/v2/alerts"


class AlertmanagerConfig(HttpConfig, forbid_unknown_fields=True):
    generator_url: Annotated[str, msgspec.Meta(
        description="the alerts' generatorURL; {rule} is the rule's name")] = \
        "flarebus://rules/{rule}"
    firing_ends_after: Annotated[Seconds, msgspec.Meta(
        description="endsAt of a firing alert: its time plus this")] = 24 * 3600.0


def rfc3339(ts: float) -> str:
    """Unix seconds as Alertmanager's time format (UTC, milliseconds)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def alert(trigger: Trigger, config: AlertmanagerConfig) -> dict[str, Any]:
    """One postable alert (Alertmanager API v2) for ``trigger``."""
    annotations = {"value": f"{trigger.value:g}", "threshold": trigger.threshold,
                   **trigger.annotations}
    ends = trigger.at if trigger.state == "resolved" else \
        trigger.at + float(config.firing_ends_after)
    return {
        "labels": {**trigger.labels, "alertname": trigger.rule, "severity": trigger.severity},
        "annotations": annotations,
        "startsAt": rfc3339(trigger.active_since),
        "endsAt": rfc3339(ends),
        "generatorURL": config.generator_url.replace("{rule}", trigger.rule),
    }


class AlertmanagerAction(HttpPoster, Action):
    """POSTs the trigger as a one-alert list to ``<url>/api/v2/alerts``."""

    name = "alertmanager"
    config_schema = AlertmanagerConfig

    async def init(self, config: AlertmanagerConfig) -> None:
        self.setup(config)  # not HTTP_PLUGIN_ENDPOINT: that is the http action's
        self.url = config.url.rstrip("/") + ALERTS_PATH if config.url else None

    def validate_config(self) -> None:
        self.check()

    async def execute(self, trigger: Trigger) -> None:
        await self.send(encoder.encode([alert(trigger, self.config)]))
