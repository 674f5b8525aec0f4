"""What the console knows, kept current from NATS: summaries, triggers, dead letters, stacks.

Each feed is one subscription started with the console: an ordered consumer
on the state bucket's ``meta.engine.*`` keys (the last summary of every
engine, then each new one), an ordered consumer on the triggers stream from
its last ``history`` messages on (triggers and dead letters), and plain
subscriptions to ``stacks.>``, to the finished-actions bucket's subjects and
the workers' acks (a page's "ran" is current) and to the subjects ``flamegraph`` actions publish
graphs on. Nothing is polled: a page is rendered from memory.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from flarebus import bus
from flarebus.events import Trigger, trigger_decoder
from flarebus.frame import Frame
from flarebus.kv import is_removal
from flarebus.summary import SUMMARY_KEYS, EngineSummary, summary_decoder
from flarebus.web.changes import Changes
from flarebus.web.stacks import StackWindows

log = logging.getLogger("flarebus.web")

HISTORY = 5000
MAX_ATTACHED = 200
TRIGGER_HEADER = "Flarebus-Trigger"


@dataclass
class Entry:
    """One message of the triggers stream: a trigger, or a dead letter with why it died."""

    seq: int
    subject: str
    trigger: Trigger
    headers: dict[str, str]

    @property
    def dead(self) -> bool:
        return self.subject.startswith(bus.DEAD_LETTER_PREFIX + ".")


@dataclass
class Attached:
    """A flamegraph that goes with a trigger: the console's own window when the trigger
    arrived (``frame``), or the document a ``flamegraph`` action published (``data``)."""

    trigger_id: str
    rule: str
    source: str
    at: float
    frame: Frame | None = None
    unit: str = "samples"
    data: bytes = b""
    media_type: str = ""


class ConsoleState:
    """The feeds, and the change counter that tells open pages to refresh."""

    def __init__(self, nc: Client, *, stacks_prefix: str = "stacks",
                 flamegraph_subjects: str = "flamegraphs.>", history: int = HISTORY,
                 worker_consumer: str = "flarebus-workers") -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stacks_prefix = stacks_prefix
        self.flamegraph_subjects = flamegraph_subjects
        self.history = history
        self.worker_consumer = worker_consumer
        self.changes = Changes()
        self.summaries: dict[str, EngineSummary] = {}
        self.entries: deque[Entry] = deque(maxlen=history)
        self.dead: dict[int, Entry] = {}
        self.stacks = StackWindows()
        self.attached: OrderedDict[str, Attached] = OrderedDict()
        self.invalid = 0
        self._subs: list[Subscription] = []
        self._graphs = 0

    async def start(self) -> ConsoleState:
        self.js = await bus.ensure_jetstream(self.nc)
        kv = await bus.engine_state_bucket(self.js)
        self._subs.append(await self.js.subscribe(
            f"$KV.{kv._name}.{SUMMARY_KEYS}>", cb=self._on_summary, ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT))
        info = await self.js.stream_info(bus.TRIGGERS_STREAM)
        first = max(info.state.first_seq, info.state.last_seq - self.history + 1, 1)
        self._subs.append(await self.js.subscribe(
            bus.TRIGGERS_SUBJECTS, cb=self._on_trigger, ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=first),
            pending_msgs_limit=-1, pending_bytes_limit=-1))
        self._subs.append(await self.nc.subscribe(f"{self.stacks_prefix}.>", cb=self._on_stacks))
        # a worker's record of a finished action, and its ack of a trigger (plain
        # subscriptions see KV puts and acks as they go): the page's "ran" stays current
        self._subs.append(await self.nc.subscribe(f"$KV.{bus.ACTIONS_DONE_BUCKET}.>",
                                                  cb=self._on_action_done))
        self._subs.append(await self.nc.subscribe(
            f"$JS.ACK.{bus.TRIGGERS_STREAM}.{self.worker_consumer}.>", cb=self._on_action_done))
        if self.flamegraph_subjects:
            self._subs.append(await self.nc.subscribe(self.flamegraph_subjects,
                                                      cb=self._on_flamegraph))
        await self.nc.flush()
        return self

    async def stop(self) -> None:
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # closing anyway: a gone connection is not an error here
                log.debug("unsubscribe: %s", exc)
        self._subs = []

    # ------------------------------------------------------------------ feeds

    async def _on_summary(self, msg: Msg) -> None:
        key = msg.subject.rsplit(".", 1)[-1]
        if is_removal(msg):
            self.summaries.pop(key, None)
        else:
            try:
                self.summaries[key] = summary_decoder.decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.invalid += 1
                log.warning("ignoring an unreadable engine summary %s: %s", key, exc)
                return
        self.changes.bump("summaries")

    async def _on_trigger(self, msg: Msg) -> None:
        try:
            trigger = trigger_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            self.invalid += 1
            return
        entry = Entry(msg.metadata.sequence.stream, msg.subject, trigger,
                      dict(msg.headers or {}))
        if len(self.entries) == self.entries.maxlen and self.entries[0].dead:
            self.dead.pop(self.entries[0].seq, None)
        self.entries.append(entry)
        if entry.dead:
            self.dead[entry.seq] = entry
        elif trigger.state == "firing":
            self._snapshot(trigger)
        self.changes.bump("triggers")

    async def _on_action_done(self, msg: Msg) -> None:
        self.changes.bump("triggers")

    async def _on_stacks(self, msg: Msg) -> None:
        if self.stacks.add_message(msg.data):
            self.changes.bump("stacks")

    async def _on_flamegraph(self, msg: Msg) -> None:
        trigger_id = (msg.headers or {}).get(TRIGGER_HEADER)
        if not trigger_id:
            return
        rule = next((e.trigger.rule for e in reversed(self.entries)
                     if e.trigger.id == trigger_id), "")
        self._attach(Attached(trigger_id, rule, msg.subject, time.time(), data=msg.data,
                              media_type=(msg.headers or {}).get("Content-Type", "")))

    # --------------------------------------------------------------- queries

    def stack_source(self, trigger: Trigger) -> str | None:
        """The stack source a stack rule's trigger is about (its metric is stacks.<source>)."""
        if trigger.labels.get("source") and trigger.metric_name.startswith(self.stacks_prefix):
            return trigger.labels["source"]
        prefix = f"{self.stacks_prefix}."
        if trigger.metric_name.startswith(prefix):
            return trigger.metric_name[len(prefix):].split(".")[0] or None
        return None

    def _snapshot(self, trigger: Trigger) -> None:
        source = self.stack_source(trigger)
        if source is None:
            return
        tree = self.stacks.tree(source)
        if tree.value > 0:
            self._attach(Attached(trigger.id, trigger.rule, source, time.time(), frame=tree,
                                  unit=self.stacks.unit(source)))

    def _attach(self, graph: Attached) -> None:
        self._graphs += 1
        self.attached[f"g{self._graphs}"] = graph  # a key safe in a URL path, unlike trigger ids
        while len(self.attached) > MAX_ATTACHED:
            self.attached.popitem(last=False)
        self.changes.bump("stacks")

    def triggers(self) -> list[Trigger]:
        """The triggers (not dead letters) held, oldest first."""
        return [e.trigger for e in self.entries if not e.dead]

    def forget_dead(self, seq: int) -> None:
        self.dead.pop(seq, None)
        for entry in self.entries:
            if entry.seq == seq:
                self.entries.remove(entry)
                break
        self.changes.bump("triggers")
