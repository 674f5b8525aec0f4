"""The Triggers page's rows: each trigger with what became of its actions, and re-queueing.

A worker acks a trigger once its actions are done, records each success of a
trigger with several actions in the finished-actions bucket
(``flarebus.kv.done_key``), and publishes a trigger whose action gave up to
``triggers.dead.<rule>`` with the plugins and errors in headers. Together
they say, per action, "ran", "dead-lettered" (with the error) or "not yet";
the acks are read as the worker consumer's ack floor. Re-queueing a dead
letter publishes its trigger again on ``triggers.<rule>`` (the worker skips
the actions that already ran) and then removes the dead letter, so it is
never in both places and never lost.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import msgspec
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from flarebus import bus
from flarebus.events import ActionRef, Trigger, series_key, trigger_decoder
from flarebus.kv import done_key
from flarebus.web.feeds import ConsoleState, Entry

# the dead letter's headers (actions/deadletter.py writes them)
PLUGIN_HEADER = "Flarebus-Plugin"
ERROR_HEADER = "Flarebus-Error"
TRIES_HEADER = "Flarebus-Tries"


@dataclass
class ActionStatus:
    plugin: str
    state: str  # ran | dead-lettered | not yet | unknown
    error: str = ""


@dataclass
class TriggerRow:
    entry: Entry
    actions: list[ActionStatus] = field(default_factory=list)
    dead: Entry | None = None
    graph: str | None = None  # key of an attached flamegraph
    repeat: bool = False  # a firing again (the rule's `repeat`) of a series already firing

    @property
    def trigger(self) -> Trigger:
        return self.entry.trigger


class RequeueError(Exception):
    """A dead letter that cannot be re-queued (gone, or not a dead letter)."""


async def _done_bucket(state: ConsoleState) -> KeyValue | None:
    try:
        return await state.js.key_value(bus.ACTIONS_DONE_BUCKET)
    except NotFoundError:  # no worker has run yet
        return None


async def _ran(kv: KeyValue | None, trigger: Trigger, index: int, ref: ActionRef) -> bool | None:
    if kv is None:
        return None
    try:
        await kv.get(done_key(trigger.id, index, ref.plugin))
    except NotFoundError:  # KeyNotFoundError is one
        return False
    return True


async def _ack_floor(state: ConsoleState) -> int:
    """The stream sequence up to which the workers acked every trigger (0: unknown)."""
    try:
        info = await state.js.consumer_info(bus.TRIGGERS_STREAM, state.worker_consumer)
    except NotFoundError:  # no worker has started
        return 0
    return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0


def _firing_key(trigger: Trigger) -> tuple[str, str, float]:
    return trigger.rule, series_key(trigger.metric_name, trigger.labels), trigger.active_since


async def rows(state: ConsoleState, entries: list[Entry], default_action: str) -> list[TriggerRow]:
    """The rows of these triggers, their actions looked up together."""
    kv = await _done_bucket(state)
    acked = await _ack_floor(state)
    first_firing: dict[tuple[str, str, float], int] = {}
    for e in state.entries:  # oldest first: the first firing of one activation
        if not e.dead and e.trigger.state == "firing":
            first_firing.setdefault(_firing_key(e.trigger), e.seq)
    dead_by_id = {e.trigger.id: e for e in state.dead.values()}
    graphs = {g.trigger_id: key for key, g in state.attached.items()}
    out: list[TriggerRow] = []
    lookups = []
    for entry in entries:
        trigger = entry.trigger
        refs = trigger.actions or [ActionRef(plugin=default_action)]
        row = TriggerRow(entry, dead=dead_by_id.get(trigger.id), graph=graphs.get(trigger.id),
                         repeat=not entry.dead and trigger.state == "firing"
                         and first_firing.get(_firing_key(trigger), entry.seq) < entry.seq)
        out.append(row)
        for i, ref in enumerate(refs):
            row.actions.append(ActionStatus(ref.plugin, "unknown"))
            lookups.append((row, i, _ran(kv, trigger, i, ref)))
    found = await asyncio.gather(*(c for _, _, c in lookups))
    for (row, i, _), ran in zip(lookups, found, strict=True):
        status = row.actions[i]
        dead = row.dead.headers if row.dead is not None else {}
        if status.plugin in dead.get(PLUGIN_HEADER, "").split(","):
            status.state, status.error = "dead-lettered", dead.get(ERROR_HEADER, "")
        elif ran or row.entry.seq <= acked:  # acked and not dead-lettered: it ran
            status.state = "ran"
        else:
            status.state = "not yet"
    return out


async def requeue(state: ConsoleState, seq: int) -> Trigger:
    """Publish dead letter ``seq``'s trigger on ``triggers.<rule>`` again, then delete it."""
    try:
        raw = await state.js.get_msg(bus.TRIGGERS_STREAM, seq)
    except NotFoundError:
        state.forget_dead(seq)
        raise RequeueError(f"dead letter {seq} is gone (re-queued already, or expired)") from None
    if not (raw.subject or "").startswith(bus.DEAD_LETTER_PREFIX + "."):
        raise RequeueError(f"message {seq} is not a dead letter")
    try:
        trigger = trigger_decoder.decode(raw.data or b"")
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        raise RequeueError(f"dead letter {seq} does not hold a trigger: {exc}") from None
    headers = {bus.MSG_ID_HEADER: f"{trigger.id}:requeue:{seq}"}
    for key in ("traceparent", "tracestate"):
        if raw.headers and key in raw.headers:
            headers[key] = raw.headers[key]
    await state.js.publish(bus.trigger_subject(trigger.rule), raw.data or b"", headers=headers)
    await state.js.delete_msg(bus.TRIGGERS_STREAM, seq)
    state.forget_dead(seq)
    return trigger
