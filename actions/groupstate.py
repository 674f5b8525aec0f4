"""A group's durable state, and its transitions as pure functions (no I/O, easy to test).

One KV entry per group (actions/grouping.py) holds a :class:`GroupState`:
the latest trigger of each alert (by Alertmanager fingerprint) and which
trigger of it was last notified, when the group was created and last
notified, and who owns its current notification (a lease). Every worker
applies these functions to the value it read and writes the result back with
compare-and-set on the entry's revision, so concurrent workers never lose
each other's changes: a conflict is re-read and re-applied.

When a group is due:

- never notified: ``created + wait`` (Alertmanager's group_wait);
- changed since its last notification: ``last + interval`` (group_interval);
- unchanged and firing: ``last + repeat`` (repeat_interval; 0 never);
- a failed notification: its retry time; an owned one: when the lease ends
  (another worker may take it over then).
"""

from __future__ import annotations

import msgspec

from flarebus.events import Trigger
from flarebus.grouping import GroupPolicy, TriggerGroup, alert_labels, fingerprint, make_group


class Alert(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """One alert of a group: its latest trigger, and the id of the trigger last notified."""

    trigger: Trigger
    sent: str = ""


class GroupState(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, kw_only=True):
    """A group as stored in the ``FLAREBUS_GROUPS`` bucket."""

    rule: str
    key: str
    labels: dict[str, str]
    by: list[str]
    wait: float
    interval: float
    repeat: float
    created: float
    alerts: dict[str, Alert] = {}
    #: when the last notification completed; 0: never
    last: float = 0.0
    #: completed notifications (the current one's number)
    number: int = 0
    owner: str = ""
    lease_until: float = 0.0
    #: claims of the current notification (the try count); reset when it completes
    tries: int = 0
    retry_at: float = 0.0

    def changed(self) -> bool:
        """Whether an alert holds a trigger not notified yet."""
        return any(a.sent != a.trigger.id for a in self.alerts.values())

    def due(self) -> float | None:
        """When the group next needs a worker (see the module docstring); None: never."""
        if self.owner:
            return self.lease_until
        if self.retry_at:
            return self.retry_at
        if not self.last:
            return self.created + self.wait
        if self.changed():
            return self.last + self.interval
        if self.repeat and any(a.trigger.state == "firing" for a in self.alerts.values()):
            return self.last + self.repeat
        return None

    def notification(self) -> TriggerGroup:
        """What the current notification sends: every alert of the group."""
        return make_group(self.rule, self.key, self.labels,
                          (a.trigger for a in self.alerts.values()), self.number)


state_encoder = msgspec.json.Encoder()
state_decoder = msgspec.json.Decoder(GroupState)


def new_group(trigger: Trigger, policy: GroupPolicy, labels: dict[str, str], key: str,
              now: float) -> GroupState | None:
    """A group started by ``trigger``; None for a resolution of an alert no group holds
    (its firing was notified and left, or never grouped): there is nothing to tell."""
    if trigger.state != "firing":
        return None
    state = GroupState(rule=trigger.rule, key=key, labels=labels, by=list(policy.by),
                       wait=policy.wait, interval=policy.interval, repeat=policy.repeat,
                       created=now)
    add(state, trigger)
    return state


def add(state: GroupState, trigger: Trigger) -> bool:
    """Put ``trigger`` in the group; False when that changes nothing (a redelivery, an older
    trigger than the one held, or a resolution of an alert the group does not hold)."""
    fp = fingerprint(alert_labels(trigger))
    held = state.alerts.get(fp)
    if held is None:
        if trigger.state != "firing":
            return False
        state.alerts[fp] = Alert(trigger)
        return True
    if held.trigger.id == trigger.id or trigger.at < held.trigger.at:
        return False
    state.alerts[fp] = Alert(trigger, held.sent)
    return True


def claim(state: GroupState, worker: str, now: float, lease: float) -> bool:
    """Take the group's due notification for ``worker``; False when it is not due (or is
    owned by a live lease). A takeover after an expired lease counts as another try."""
    due = state.due()
    if due is None or due > now:
        return False
    state.owner = worker
    state.lease_until = now + lease
    state.tries += 1
    state.retry_at = 0.0
    return True


def renew(state: GroupState, worker: str, now: float, lease: float) -> bool:
    """Extend ``worker``'s lease; False when it no longer owns the group."""
    if state.owner != worker:
        return False
    state.lease_until = now + lease
    return True


def notified(state: GroupState, worker: str, sent: TriggerGroup, now: float) -> bool:
    """The notification ``sent`` completed: mark what it held as sent, drop resolved alerts
    it told of, start the interval. False when ``worker`` lost the group meanwhile (its
    lease ran out and another took it over). An alert that changed while the
    notification ran stays changed, for the next one."""
    if state.owner != worker:
        return False
    for trigger in sent.alerts:
        fp = fingerprint(alert_labels(trigger))
        held = state.alerts.get(fp)
        if held is None or held.trigger.id != trigger.id:
            continue
        if trigger.state == "resolved":
            del state.alerts[fp]
        else:
            held.sent = trigger.id
    state.last = now
    state.number += 1
    state.owner = ""
    state.lease_until = 0.0
    state.tries = 0
    state.retry_at = 0.0
    return True


def failed(state: GroupState, worker: str, retry_at: float) -> bool:
    """The notification failed and will be retried at ``retry_at`` by whichever worker."""
    if state.owner != worker:
        return False
    state.owner = ""
    state.lease_until = 0.0
    state.retry_at = retry_at
    return True
