"""Alert groups: the type group-aware plugins receive, and how a trigger finds its group.

A rule with ``group: {by: [host]}`` has its triggers gathered per rule and per
value of the ``by`` labels; the worker notifies each action of the rule once
per group (actions/grouping.py keeps the groups in JetStream KV). The
definitions here are shared by the worker, the built-in plugins and third-party
plugins, so they live in the package root: the :class:`TriggerGroup` a plugin's
``execute_group(group)`` receives, the ``group:`` config section, and the
Alertmanager-compatible identities (alert labels, fingerprint, group key),
which receivers written for Alertmanager rely on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from flarebus.durations import Seconds
from flarebus.events import GroupSpec, Trigger

#: Alertmanager's defaults for group_wait, group_interval and repeat_interval.
DEFAULT_WAIT = 30.0
DEFAULT_INTERVAL = 300.0
DEFAULT_REPEAT = 4 * 3600.0


class GroupSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Grouping defaults (`group:`). Present, it also groups every rule without a `group:`
    of its own (a rule opts out with `group: false`). Read by the workers.
    """

    by: Annotated[list[str], Meta(description="labels whose values form a group")] = \
        msgspec.field(default_factory=list)
    wait: Annotated[Seconds, Meta(description="a new group's wait for more alerts")] = \
        DEFAULT_WAIT
    interval: Annotated[Seconds, Meta(description="at most one notification of a changed "
                                                  "group this often")] = DEFAULT_INTERVAL
    repeat: Annotated[Seconds, Meta(description="re-send an unchanged firing group this "
                                                "often; 0: never")] = DEFAULT_REPEAT
    lease: Annotated[Seconds, Meta(description="how long a worker owns a group's "
                                               "notification before another may take over "
                                               "(renewed while it runs)")] = 30.0

    def __post_init__(self) -> None:
        for name in ("wait", "interval", "repeat", "lease"):  # the Seconds subclass: plain float
            setattr(self, name, float(getattr(self, name)))


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """A rule's grouping with every default filled in."""

    by: tuple[str, ...]
    wait: float
    interval: float
    repeat: float


def resolve_policy(spec: GroupSpec | None, defaults: GroupSettings | None
                   ) -> GroupPolicy | None:
    """The grouping of a trigger: its rule's ``group:`` over the config's, or None (ungrouped).

    A rule without ``group:`` is grouped only when the config has a ``group:``
    section; ``group: false`` never is.
    """
    if spec is None and defaults is None:
        return None
    if spec is not None and not spec.enabled:
        return None
    base = defaults or GroupSettings()
    spec = spec or GroupSpec()
    return GroupPolicy(
        by=tuple(base.by if spec.by is None else spec.by),
        wait=base.wait if spec.wait is None else spec.wait,
        interval=base.interval if spec.interval is None else spec.interval,
        repeat=base.repeat if spec.repeat is None else spec.repeat)


def alert_labels(trigger: Trigger) -> dict[str, str]:
    """A trigger's labels as an Alertmanager alert has them: ``alertname`` (the rule) and
    ``severity`` added unless the labels already hold them."""
    labels = dict(trigger.labels)
    labels.setdefault("alertname", trigger.rule)
    labels.setdefault("severity", trigger.severity)
    return labels


_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label names and values,
    each followed by the byte 0xff (prometheus/common ``LabelSet.Fingerprint``), as 16 hex
    digits."""
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode():
                h = ((h ^ byte) * _FNV_PRIME) & _MASK
            h = ((h ^ 0xFF) * _FNV_PRIME) & _MASK
    return f"{h:016x}"


def group_labels(trigger: Trigger, by: Iterable[str]) -> dict[str, str]:
    """The labels that name a trigger's group: ``alertname`` and the ``by`` labels it has
    (as in Alertmanager, a missing label is left out, so it groups with the others lacking it)."""
    labels = alert_labels(trigger)
    out = {"alertname": trigger.rule}
    out.update({name: labels[name] for name in by if name in labels})
    return out


def label_set_text(labels: Mapping[str, str]) -> str:
    """``{alertname="high-cpu", host="web-1"}``: a label set as Go's ``LabelSet.String``."""
    pairs = sorted(f"{k}={msgspec.json.encode(v).decode()}" for k, v in labels.items())
    return "{" + ", ".join(pairs) + "}"


def group_key(labels: Mapping[str, str]) -> str:
    """The group's key as Alertmanager writes it for its root route: ``{}:{labels}``."""
    return "{}:" + label_set_text(labels)


def common(mappings: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The pairs every mapping has (Alertmanager's commonLabels / commonAnnotations)."""
    if not mappings:
        return {}
    out = dict(mappings[0])
    for other in mappings[1:]:
        out = {k: v for k, v in out.items() if other.get(k) == v}
        if not out:
            break
    return out


class TriggerGroup(msgspec.Struct, frozen=True, kw_only=True):
    """One notification of a group: what ``execute_group(group)`` receives.

    ``firing`` and ``resolved`` hold the latest trigger of each alert in the
    group; a resolved alert is sent once, in the first notification after it
    resolved, and then leaves the group. ``number`` counts the group's
    notifications from 0 (a repeat of an unchanged group is a new number).
    """

    rule: str
    key: str
    labels: dict[str, str]
    firing: list[Trigger]
    resolved: list[Trigger]
    common_labels: dict[str, str]
    common_annotations: dict[str, str]
    number: int = 0

    @property
    def status(self) -> Literal["firing", "resolved"]:
        """firing while any alert of it fires (as Alertmanager's status)."""
        return "firing" if self.firing else "resolved"

    @property
    def alerts(self) -> list[Trigger]:
        """Firing alerts first, then resolved ones."""
        return [*self.firing, *self.resolved]

    def only(self, states: Sequence[str]) -> TriggerGroup | None:
        """This group with only the alerts in ``states`` (an action's ``on:``), None if empty."""
        firing = self.firing if "firing" in states else []
        resolved = self.resolved if "resolved" in states else []
        if not firing and not resolved:
            return None
        if len(firing) == len(self.firing) and len(resolved) == len(self.resolved):
            return self
        return make_group(self.rule, self.key, self.labels, [*firing, *resolved], self.number)


def make_group(rule: str, key: str, labels: Mapping[str, str], alerts: Iterable[Trigger],
               number: int = 0) -> TriggerGroup:
    """A TriggerGroup of these alerts, sorted by labels, with its common labels/annotations."""
    ordered = sorted(alerts, key=lambda t: sorted(alert_labels(t).items()))
    return TriggerGroup(
        rule=rule, key=key, labels=dict(labels),
        firing=[t for t in ordered if t.state == "firing"],
        resolved=[t for t in ordered if t.state == "resolved"],
        common_labels=common([alert_labels(t) for t in ordered]),
        common_annotations=common([t.annotations for t in ordered]), number=number)


def group_lines(group: TriggerGroup) -> tuple[str, list[str]]:
    """A group as a title (``[FIRING:2] high-cpu host=web-1``) and a line per alert."""
    from flarebus.plugin import message_for

    title = f"[{group.status.upper()}:{len(group.firing)}] {group.rule}"
    extra = {k: v for k, v in group.labels.items() if k != "alertname"}
    if extra:
        title += " " + " ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    lines = []
    for heading, triggers in (("Firing", group.firing), ("Resolved", group.resolved)):
        if triggers and group.firing and group.resolved:
            lines.append(f"{heading}:")
        lines += [f"- {message_for(t)}" for t in triggers]
    return title, lines


def group_text(group: TriggerGroup) -> str:
    """A group as one message: the title line, then a line per alert (what a sink sends)."""
    title, lines = group_lines(group)
    return "\n".join([title, *lines])
