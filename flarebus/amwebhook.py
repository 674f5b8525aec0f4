"""Alertmanager's webhook JSON (version "4"), built from a TriggerGroup.

The webhook action posts this for a group, so receivers written for
Alertmanager work unchanged. The field set is that of Alertmanager's
``notify/webhook.Message`` and ``template.Data``/``template.Alert`` as released
(0.25-0.28): ``receiver``, ``status``, ``alerts[]`` (``status``, ``labels``,
``annotations``, ``startsAt``, ``endsAt``, ``generatorURL``, ``fingerprint``),
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``version``, ``groupKey``, ``truncatedAlerts``. Times are RFC 3339 in UTC as Go
writes them; a firing alert's ``endsAt`` is Go's zero time, as Alertmanager
sends for an alert with no end yet. ``startsAt`` is the trigger's
``active_since`` (Prometheus' activeAt), so a firing alert and its resolution
carry the same start.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flarebus.events import Trigger
from flarebus.grouping import TriggerGroup, alert_labels, common, fingerprint

VERSION = "4"
#: Go's zero time.Time, as encoding/json writes it.
ZERO_TIME = "0001-01-01T00:00:00Z"


def go_time(ts: float) -> str:
    """Unix seconds as Go's ``time.Time`` JSON: RFC 3339, UTC, fraction without trailing zeros."""
    moment = datetime.fromtimestamp(ts, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def am_alert(trigger: Trigger, generator_url: str = "") -> dict[str, Any]:
    """One alert of the body (``template.Alert``)."""
    return {
        "status": trigger.state,
        "labels": alert_labels(trigger),
        "annotations": dict(trigger.annotations),
        "startsAt": go_time(trigger.active_since),
        "endsAt": go_time(trigger.at) if trigger.state == "resolved" else ZERO_TIME,
        "generatorURL": generator_url.format(rule=trigger.rule) if generator_url else "",
        "fingerprint": fingerprint(alert_labels(trigger)),
    }


def webhook_body(group: TriggerGroup, *, receiver: str = "flarebus", external_url: str = "",
                 generator_url: str = "", max_alerts: int = 0) -> dict[str, Any]:
    """The webhook JSON for ``group``: firing alerts first; past ``max_alerts`` (0: no limit)
    the rest are counted in ``truncatedAlerts``, as Alertmanager's ``max_alerts``.

    commonLabels and commonAnnotations are over the alerts sent (as Alertmanager's, which
    computes them after truncating).
    """
    alerts = group.alerts
    truncated = 0
    if max_alerts and len(alerts) > max_alerts:
        alerts, truncated = alerts[:max_alerts], len(alerts) - max_alerts
    return {
        "receiver": receiver,
        "status": group.status,
        "alerts": [am_alert(t, generator_url) for t in alerts],
        "groupLabels": dict(group.labels),
        "commonLabels": common([alert_labels(t) for t in alerts]),
        "commonAnnotations": common([t.annotations for t in alerts]),
        "externalURL": external_url,
        "version": VERSION,
        "groupKey": group.key,
        "truncatedAlerts": truncated,
    }
