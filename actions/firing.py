"""Which alerts fire now, as far as inhibition needs to know: the KV bucket ``FLAREBUS_FIRING``.

Alertmanager keeps the alerts it received in memory; flarebus has several
workers, any of which may see an alert's firing trigger and another its
resolution, and workers restart. So the worker that handles a trigger matching
some inhibit rule's *source* writes the alert's state here (firing, or resolved,
with the trigger's event time ``at``), every worker watches the bucket, and
each gate asks its live copy. A record never goes back in event time: a
late-delivered firing does not overwrite a newer resolution. Only source
alerts are written (few, by design), and resolved records are deleted after
``RESOLVED_KEPT``.

What it does not give: a target handled in the same instant as its source's
firing, by another worker, may not see it yet (Alertmanager's own race, which
its group_wait hides); the watch delivers within milliseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time

import msgspec
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from flarebus import jetstream
from flarebus.config import JetStreamSettings
from flarebus.events import Labels, Trigger, TriggerState, series_key
from flarebus.kvwatch import BucketWatch
from flarebus.labelmatch import alert_labels

log = logging.getLogger("flarebus.worker")

FIRING_BUCKET = "FLAREBUS_FIRING"
#: How long a resolved record stays (so a late firing of the same alert is known to be old).
RESOLVED_KEPT = 3600.0


class AlertState(msgspec.Struct, forbid_unknown_fields=True):
    """One source alert's latest known state, as its last trigger said."""

    rule: str
    labels: Labels  # alert_labels: the trigger's labels with rule, alertname, severity
    state: TriggerState
    at: float


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertState)


def alert_key(trigger: Trigger) -> str:
    """One key per alert (rule, severity, series), the same for its firing and its resolution."""
    raw = f"{trigger.rule}\x00{trigger.severity}\x00" \
          f"{series_key(trigger.metric_name, trigger.labels)}".encode()
    return hashlib.blake2b(raw, digest_size=20).hexdigest()


async def firing_bucket(js: JetStreamContext,
                        settings: JetStreamSettings | None = None) -> KeyValue:
    return await jetstream.bucket(js, settings, FIRING_BUCKET,
                                  description="flarebus: firing inhibit-source alerts")


class FiringAlerts:
    """The live copy of the bucket, and the writes a trigger causes."""

    def __init__(self) -> None:
        self.kv: KeyValue | None = None
        self.alerts: dict[str, AlertState] = {}
        self.watch: BucketWatch | None = None

    async def start(self, js: JetStreamContext,
                    settings: JetStreamSettings | None = None) -> None:
        self.kv = await firing_bucket(js, settings)
        self.watch = BucketWatch(self.kv, self._put, lambda key: self.alerts.pop(key, None))
        await self.watch.start()

    def _put(self, key: str, value: bytes) -> None:
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            self._apply(key, _decoder.decode(value))

    def _apply(self, key: str, alert: AlertState) -> bool:
        """Keep ``alert`` unless what is known is newer in event time; True if it changed."""
        known = self.alerts.get(key)
        if known is not None and (known.at > alert.at or known == alert):
            return False
        if known is not None and known.state == alert.state == "firing":
            return False  # a repeat: nothing an inhibit rule needs
        self.alerts[key] = alert
        return True

    async def record(self, trigger: Trigger) -> None:
        """Write ``trigger``'s state (a source alert's), here at once and in the bucket."""
        key = alert_key(trigger)
        alert = AlertState(trigger.rule, alert_labels(trigger), trigger.state, trigger.at)
        if self._apply(key, alert) and self.kv is not None:
            await self.kv.put(key, _encoder.encode(alert))

    def firing(self) -> list[tuple[str, AlertState]]:
        return [(k, a) for k, a in self.alerts.items() if a.state == "firing"]

    async def forget_resolved(self, now: float | None = None) -> None:
        """Delete resolved records past ``RESOLVED_KEPT`` (any worker may: twice is fine)."""
        now = time.time() if now is None else now
        for key, alert in list(self.alerts.items()):
            if alert.state == "resolved" and now - alert.at > RESOLVED_KEPT:
                self.alerts.pop(key, None)
                if self.kv is not None:
                    with contextlib.suppress(Exception):
                        await self.kv.delete(key)

    async def close(self) -> None:
        if self.watch is not None:
            await self.watch.close()
