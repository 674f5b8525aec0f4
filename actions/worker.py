"""The action worker: one shared durable pull consumer, at-least-once actions, clean drain.

Every worker process binds the same durable consumer on ``FLAREBUS_TRIGGERS``
(filter ``triggers.*``), so JetStream splits the load between however many
run, and a message a dead worker held is redelivered to the others after
``ack_wait``. For each trigger:

- the gate (gate.py) is asked first: a silenced or inhibited trigger, and an
  action past its rate limit, does not run; it is recorded on
  ``triggers.suppressed.<rule>`` and the trigger acked;
- its actions run concurrently (a rule naming none gets ``ACTION_PLUGIN``);
- an action already recorded as done for this trigger id (KV bucket
  ``FLAREBUS_ACTIONS_DONE``) is skipped on redelivery (attempt.py);
- all succeeded: ack. Some failed: the successes are recorded, the message is
  nak'ed with an exponential, jittered delay and any worker retries it (the delivery
  count is the try count). After ``max_tries``, or on a failure no retry can
  fix, the trigger goes to ``triggers.dead.<rule>`` with the plugin, the error
  and the try count in headers, and is acked (deadletter.py);
- from the moment a message arrives until it is settled (queued or running),
  ``in_progress`` resets the server's redelivery timer, so a message is never
  redelivered while this worker still holds it; a second delivery of a message
  it holds (or has just acked) is dropped rather than run again.

Pull requests are sent by the worker itself rather than through nats-py's
``fetch()``: ``fetch`` keeps what a lingering request delivered in a local list
until the batch is full or the request expires, untracked and unheartbeated, so
with ``ack_wait`` shorter than the pull wait the server redelivered messages the
worker was still holding, into the same pull, and one worker ran a trigger twice.

SIGTERM stops fetching, waits ``grace`` for what runs, naks the rest, exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections import OrderedDict
from collections.abc import Sequence

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from flarebus import bus
from flarebus.actions.attempt import ActionRunner
from flarebus.actions.deadletter import dead_letter
from flarebus.actions.gate import Gate
from flarebus.actions.grouping import Grouper
from flarebus.actions.host import PluginHost
from flarebus.backoff import Backoff
from flarebus.config import JetStreamSettings, WorkerSettings
from flarebus.errors import ActionError, describe
from flarebus.events import Trigger, trigger_decoder
from flarebus.grouping import GroupPolicy, GroupSettings
from flarebus.telemetry import meter

log = logging.getLogger("flarebus.worker")

#: How long one pull request waits for messages before it is renewed.
FETCH_WAIT = 5.0
#: How many acked messages are remembered, so a redelivery racing an ack is not run again.
RECENT_ACKS = 10_000
#: Pull-request statuses: 100 is an idle heartbeat; 404/408 end a request normally
#: (nothing left, expired); any other (409 ...) ends it with a problem worth a pause.
_HEARTBEAT_STATUS = "100"
_NORMAL_END = frozenset({"404", "408"})

_retried = meter.create_counter("flarebus.actions.retried", description="triggers retried")


class Worker:
    """Consumes triggers and runs their actions through a PluginHost."""

    def __init__(self, nc: Client, host: PluginHost, settings: WorkerSettings,
                 grouping: GroupSettings | None = None,
                 jetstream: JetStreamSettings | None = None, gate: Gate | None = None) -> None:
        self.nc = nc
        self.jetstream = jetstream  # the stream's and bucket's settings (None: as they are)
        #: silences, inhibition and rate limits, asked before any action runs (gate.py)
        self.gate = gate or Gate()
        self.host = host
        self.settings = settings
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.js: JetStreamContext = nc.jetstream()
        self.actions = ActionRunner(host, settings.default_action)
        #: grouped rules' triggers go to their group (actions/grouping.py)
        self.grouper = Grouper(self.js, self.actions, grouping, settings)
        self.sub: Subscription | None = None
        self.inbox = ""
        #: Messages the open pull request may still deliver (one request at a time).
        self.owed = 0
        self._request_over = asyncio.Event()
        self._refused: str | None = None
        #: Held messages by stream position: a second delivery of one is not run again.
        self.held: dict[tuple[int, float], Msg] = {}
        self.recent_acks: OrderedDict[tuple[int, float], None] = OrderedDict()
        #: Fetched and not yet settled (acked, nak'ed or dead-lettered): heartbeated.
        self.inflight: dict[int, Msg] = {}  # by id(): Msg is not hashable
        #: Fetched, waiting for one of the `concurrency` runners. Up to `batch` wait here,
        #: so the next pull overlaps the running actions.
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        self.stopping = asyncio.Event()
        self._slot = asyncio.Event()
        self.max_inflight = settings.concurrency + settings.batch
        self.handled = 0

    # -- setup ---------------------------------------------------------------------------

    def consumer_config(self) -> ConsumerConfig:
        s = self.settings
        return ConsumerConfig(
            durable_name=s.consumer, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, filter_subject=bus.TRIGGERS_FILTER,
            ack_wait=s.ack_wait, max_deliver=-1,
            max_ack_pending=max(1000, s.concurrency * 64),
            description="flarebus action workers (shared by every worker process)")

    async def setup(self) -> None:
        """The stream, the done bucket and the shared consumer (created or brought in line)."""
        await bus.ensure_triggers_stream(self.js, self.jetstream)
        self.actions.kv = await bus.actions_done_bucket(self.js, self.jetstream,
                                                        ttl=self.settings.done_ttl)
        await self.gate.start(self.nc, self.jetstream)
        await self.grouper.start(self.jetstream)
        config = self.consumer_config()
        try:
            await self.js.add_consumer(bus.TRIGGERS_STREAM, config)
        except Exception as exc:  # exists with immutable differences: use it as it is
            log.warning("consumer %s: keeping the existing config (%s)", config.durable_name, exc)
        prefix = getattr(self.js, "_prefix", None) or "$JS.API"
        self.next_subject = (f"{prefix}.CONSUMER.MSG.NEXT.{bus.TRIGGERS_STREAM}."
                             f"{self.settings.consumer}")
        self.inbox = self.nc.new_inbox()
        self.sub = await self.nc.subscribe(self.inbox, cb=self._delivered,
                                           pending_msgs_limit=-1, pending_bytes_limit=-1)

    # -- main loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Fetch and handle until ``stop()``; then drain within the grace period."""
        heartbeat = asyncio.create_task(self._heartbeat())
        runners = [asyncio.create_task(self._runner()) for _ in range(self.settings.concurrency)]
        try:
            await self._fetch_loop()
        finally:
            await self.drain(runners)
            await self.grouper.stop(self.settings.grace)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.gate.close()
            with contextlib.suppress(Exception):
                if self.sub is not None:
                    await self.sub.unsubscribe()

    async def _fetch_loop(self) -> None:
        """Keep one pull request open for as many messages as there is room for."""
        low_water = max(1, self.settings.batch // 2)
        expires = int(FETCH_WAIT * 1e9)
        while not self.stopping.is_set():
            free = self.max_inflight - len(self.inflight)
            if free < low_water:  # pull in batches, not one message per freed slot
                self._slot.clear()
                await self._wait_any(self._slot)
                continue
            batch = min(self.settings.batch, free)
            self.owed = batch
            self._request_over.clear()
            try:
                await self.nc.publish(self.next_subject, json.dumps(
                    {"batch": batch, "expires": expires}).encode(), reply=self.inbox)
            except Exception as exc:  # disconnected, server restarting: try again
                self.owed = 0
                if self.stopping.is_set():
                    break
                log.warning("pull request failed: %s", describe(exc))
                await self._wait_any(None, 0.5)
                continue
            # Over when filled, expired (status 408) or refused; a request lost to a
            # reconnect is given up locally a little after the server would have.
            await self._wait_any(self._request_over, FETCH_WAIT + 1.0)
            self.owed = 0
            if self._refused is not None:  # consumer gone, limits hit: do not spin
                log.warning("pull request refused: %s", self._refused)
                self._refused = None
                await self._wait_any(None, 0.5)

    async def _delivered(self, msg: Msg) -> None:
        """A message (or a status) for our pull request: tracked and queued at once."""
        headers = msg.headers or {}
        status = headers.get("Status") if not msg.data else None
        if status is not None:
            if status != _HEARTBEAT_STATUS:
                if status not in _NORMAL_END:
                    self._refused = f"{status} {headers.get('Description', '')}".strip()
                self._request_over.set()
            return
        self.owed -= 1
        if self.owed <= 0:
            self._request_over.set()
        key = _position(msg)
        if key in self.held:  # redelivered while we hold it: our heartbeat covers both
            log.warning("dropped a second delivery of a trigger this worker holds")
            return
        if key in self.recent_acks:  # redelivered as our ack went out: ack again, no rerun
            with contextlib.suppress(Exception):
                await msg.ack()
            return
        if self.stopping.is_set():  # arrived as we stop: hand it back at once
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        self.held[key] = msg
        self.inflight[id(msg)] = msg
        self.queue.put_nowait(msg)

    async def _runner(self) -> None:
        """One of `concurrency` loops: take a fetched trigger, process it, settle it."""
        while True:
            msg = await self.queue.get()
            try:
                if self.stopping.is_set():  # fetched but not started: hand it back
                    with contextlib.suppress(Exception):
                        await msg.nak()
                else:
                    await self.process(msg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("trigger handling crashed; it will be redelivered")
            finally:
                self.inflight.pop(id(msg), None)
                self.held.pop(_position(msg), None)
                self._slot.set()

    async def _wait_any(self, event: asyncio.Event | None, timeout: float | None = None) -> None:
        waits = [asyncio.ensure_future(self.stopping.wait())]
        if event is not None:
            waits.append(asyncio.ensure_future(event.wait()))
        _, pending = await asyncio.wait(waits, timeout=timeout,
                                        return_when=asyncio.FIRST_COMPLETED)
        for p in pending:
            p.cancel()

    def stop(self) -> None:
        """Stop fetching; ``run()`` then drains and returns."""
        if not self.stopping.is_set():
            log.info("stopping: finishing %d in-flight trigger(s) within %gs",
                     len(self.inflight), self.settings.grace)
        self.stopping.set()

    async def drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Let running triggers finish within ``grace``; nak the rest (queued or cut off)."""
        deadline = time.monotonic() + self.settings.grace
        while self.inflight and time.monotonic() < deadline:
            if self.queue.qsize() >= len(self.inflight):
                break  # only queued ones left: the runners nak them as they take them
            await asyncio.sleep(0.02)
        while not self.queue.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)  # runners are nak-ing the queued ones
        for task in runners:
            task.cancel()  # a trigger still running is nak'ed by process()
        await asyncio.wait(runners, timeout=5)
        if self.inflight:
            log.warning("grace period over: handing %d trigger(s) back", len(self.inflight))
        for msg in list(self.inflight.values()):
            with contextlib.suppress(Exception):
                await msg.nak()
        self.inflight.clear()

    async def _heartbeat(self) -> None:
        """Tell the server every in-flight trigger is still being worked on."""
        interval = max(self.settings.ack_wait / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for msg in list(self.inflight.values()):
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    # -- one trigger ---------------------------------------------------------------------

    async def process(self, msg: Msg) -> None:
        """Run one trigger's actions; ack, nak for retry, or dead-letter."""
        tries = msg.metadata.num_delivered
        try:
            trigger = trigger_decoder.decode(msg.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            rule = msg.subject.rsplit(".", 1)[-1]
            await self.dead_letter(msg, rule, [ActionError("-", f"invalid trigger: {exc}",
                                                           tries, permanent=True)], tries)
            return
        policy = self.grouper.policy(trigger)
        # The gate first: a silenced or inhibited firing never joins its group. A grouped
        # rule's resolution always does (its group must drop the alert), and a group's
        # notifications are paced by its interval, not by the per-trigger rate limits.
        verdict = None
        if policy is None or trigger.state == "firing":
            verdict = await self.gate.check(msg, trigger, self.actions.refs(trigger),
                                            limit=policy is None)
            if not verdict.runs:  # silenced, inhibited or every action rate-limited: recorded
                await self.ack(msg)
                return
        if policy is not None:
            await self.group(msg, trigger, policy, tries)
            return
        assert verdict is not None
        try:
            outcome = await self.actions.run(msg, trigger, tries, verdict.limited)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        self.handled += 1
        if not outcome.failures:
            await self.ack(msg)
            return
        permanent = any(f.permanent for f in outcome.failures)
        if permanent or tries >= self.settings.max_tries:
            await self.dead_letter(msg, trigger.rule, outcome.failures, tries)
            return
        delay = self.backoff.delay(tries)
        for failure in outcome.failures:
            log.warning("trigger %s: %s; retrying in %.2fs", trigger.id, failure, delay)
        _retried.add(1, {"rule": trigger.rule})
        await msg.nak(delay=delay)

    async def group(self, msg: Msg, trigger: Trigger, policy: GroupPolicy, tries: int) -> None:
        """A grouped rule's trigger: recorded in its group, then acked (its actions run when
        the group is notified); if it cannot be recorded, nak'ed for a retry."""
        try:
            await self.grouper.record(trigger, policy)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception as exc:
            delay = self.backoff.delay(tries)
            log.warning("trigger %s: could not add it to its group: %s; retrying in %.2fs",
                        trigger.id, describe(exc), delay)
            await msg.nak(delay=delay)
            return
        self.handled += 1
        await self.ack(msg)

    async def dead_letter(self, msg: Msg, rule: str, failures: Sequence[ActionError],
                          tries: int) -> None:
        """Publish the trigger to ``triggers.dead.<rule>`` with why, then ack it."""
        await dead_letter(self.js, msg, rule, failures, tries)
        await self.ack(msg)

    async def ack(self, msg: Msg) -> None:
        """Ack, and remember it a while: a redelivery that crossed the ack is not run again."""
        await msg.ack()
        self.recent_acks[_position(msg)] = None
        if len(self.recent_acks) > RECENT_ACKS:
            self.recent_acks.popitem(last=False)


def _position(msg: Msg) -> tuple[int, float]:
    """Which stream message this is, whatever the delivery: its sequence and timestamp.

    The timestamp tells apart two messages of one sequence number in a recreated stream.
    """
    meta = msg.metadata
    return meta.sequence.stream, meta.timestamp.timestamp()


async def serve(nc: Client, host: PluginHost, settings: WorkerSettings, *,
                handle_signals: bool = True, stop: asyncio.Event | None = None,
                grouping: GroupSettings | None = None,
                jetstream: JetStreamSettings | None = None, gate: Gate | None = None) -> Worker:
    """Set up and run a worker until SIGTERM/SIGINT, ``stop`` is set, or ``worker.stop()``."""
    worker = Worker(nc, host, settings, grouping, jetstream, gate)
    await worker.setup()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
    if stop is not None:
        async def relay() -> None:
            await stop.wait()
            worker.stop()
        relay_task = asyncio.create_task(relay())
    log.info("worker ready: consumer %s, concurrency %d, plugins %s", settings.consumer,
             settings.concurrency, ", ".join(host.registry.names("action", "sink")))
    try:
        await worker.run()
    finally:
        if stop is not None:
            relay_task.cancel()
    return worker
