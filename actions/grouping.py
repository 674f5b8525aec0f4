"""Grouped notifications across many workers: group state in JetStream KV, changed by CAS.

A trigger of a grouped rule does not run its actions when it arrives. The
worker that receives it puts it into its group's entry of the KV bucket
``FLAREBUS_GROUPS`` (key ``<rule>.<hash of the group labels>``) with
compare-and-set on the entry's revision, and acks the trigger only once that
write succeeded: a worker killed at any point before the ack leaves the
trigger to be redelivered, one killed after it left the trigger in the group.
No worker keeps a group in memory while it waits, so a ``kill -9`` during a
group's ``wait`` loses nothing.

Every worker watches the bucket and knows when each group is due
(actions/groupstate.py). When one is, every worker may try to *claim* it: a
CAS write naming itself owner with a lease; one write wins, the others see
the new revision and stand back. The owner runs each action of the rule once
for the whole group (``execute_group``), renewing its lease while they run,
and then writes the group back as notified (which alerts it told of, when),
again by CAS, so triggers that arrived meanwhile stay pending for the next
notification. If the owner dies, its lease runs out and another worker
claims the group again; the idempotency records of ``FLAREBUS_ACTIONS_DONE``
(keyed by group and notification number) let it skip the actions the dead
owner finished. A failed notification is retried with the worker's backoff
by whichever worker claims it next (each claim is a try); after
``max_tries``, or on a permanent failure, its triggers are dead-lettered and
the group moves on. Leases use the wall clock: workers' clocks must agree to
well within a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence

from nats.js import JetStreamContext
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from flarebus import bus
from flarebus.actions.attempt import ActionRunner
from flarebus.actions.deadletter import publish_dead
from flarebus.actions.groupstate import (
    GroupState,
    claim,
    failed,
    new_group,
    notified,
    renew,
    state_decoder,
    state_encoder,
)
from flarebus.actions.groupstate import add as add_trigger
from flarebus.backoff import Backoff
from flarebus.config import JetStreamSettings, WorkerSettings
from flarebus.errors import ActionError, describe
from flarebus.events import Trigger, encoder
from flarebus.grouping import (
    GroupPolicy,
    GroupSettings,
    TriggerGroup,
    group_key,
    group_labels,
    resolve_policy,
)
from flarebus.kv import lost_race

log = logging.getLogger("flarebus.worker")

GROUP_HEADER = "Flarebus-Group"
#: The longest the scheduler sleeps without looking again (the watch wakes it earlier).
MAX_SLEEP = 5.0
#: Conflicting writes tolerated for one change before it counts as a failure.
MAX_CONFLICTS = 200

Change = Callable[[GroupState | None], GroupState | bool | None]


def kv_key(rule: str, labels: dict[str, str]) -> str:
    """The bucket key of a group: the rule (a subject token) and a hash of its labels."""
    raw = "\x00".join(f"{k}\x00{v}" for k, v in sorted(labels.items())).encode()
    return f"{rule}.{hashlib.blake2b(raw, digest_size=16).hexdigest()}"


def added(state: GroupState | None, *, triggers: list[Trigger], policy: GroupPolicy,
          labels: dict[str, str]) -> GroupState | bool:
    """``state`` with ``triggers`` put in (a new group if there is none); False: no change."""
    changed = False
    for trigger in triggers:
        if state is None:
            state = new_group(trigger, policy, labels, group_key(labels), time.time())
            changed = state is not None
        else:
            changed = add_trigger(state, trigger) or changed
    return changed and state is not None and state


def worker_id() -> str:
    """Who owns a claim: host, process and a random part (a pid can be reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Grouper:
    """One worker's part in grouping: record triggers, watch the groups, notify due ones."""

    def __init__(self, js: JetStreamContext, actions: ActionRunner,
                 defaults: GroupSettings | None, settings: WorkerSettings) -> None:
        self.js = js
        self.actions = actions
        self.defaults = defaults
        self.lease = (defaults or GroupSettings()).lease
        self.max_tries = settings.max_tries
        self.backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self.me = worker_id()
        self.kv: KeyValue | None = None
        #: bucket key -> when the group is next due (None: not due), from the watch
        self.due: dict[str, float | None] = {}
        self.flushing: dict[str, asyncio.Task[None]] = {}
        self.limit = asyncio.Semaphore(settings.concurrency)
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        #: triggers waiting for the write to their group that is under way, by bucket key
        self.queued: dict[str, list[tuple[Trigger, asyncio.Future[None]]]] = {}
        self.writers: set[asyncio.Task[None]] = set()
        self.notified = 0

    def policy(self, trigger: Trigger) -> GroupPolicy | None:
        """The trigger's grouping, or None when its rule is not grouped."""
        return resolve_policy(trigger.group, self.defaults)

    async def start(self, jetstream: JetStreamSettings | None = None) -> None:
        self.kv = await bus.groups_bucket(self.js, jetstream)
        watcher = await self.kv.watchall()
        self.tasks = [asyncio.create_task(self._watching(watcher)),
                      asyncio.create_task(self._schedule())]

    async def stop(self, grace: float) -> None:
        """Stop scheduling; give running notifications ``grace`` (a cut-off one is taken
        over by another worker when its lease ends)."""
        for task in self.tasks:
            task.cancel()
        running = list(self.flushing.values())
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.wait(running, timeout=5)
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- recording ----------------------------------------------------------------------

    async def record(self, trigger: Trigger, policy: GroupPolicy) -> None:
        """Put ``trigger`` in its group durably (the caller acks it after this returns).

        Triggers of one group that arrive while a write to it is under way are written
        together in the next one: in a storm the triggers of a group come at once, and
        one CAS write per trigger would mostly conflict with the others.
        """
        labels = group_labels(trigger, policy.by)
        key = kv_key(trigger.rule, labels)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queued = self.queued.get(key)
        if queued is not None:  # a writer for this group runs: it takes this one next
            queued.append((trigger, done))
        else:
            self.queued[key] = [(trigger, done)]
            writer = asyncio.create_task(self._writer(key, labels, policy))
            self.writers.add(writer)
            writer.add_done_callback(self.writers.discard)
        await done

    async def _writer(self, key: str, labels: dict[str, str], policy: GroupPolicy) -> None:
        """Write what is queued for ``key``, in rounds, until nothing more arrived."""
        while batch := self.queued[key]:
            self.queued[key] = []
            triggers = [t for t, _ in batch]
            try:
                await self.modify(key, functools.partial(
                    added, triggers=triggers, policy=policy, labels=labels))
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        del self.queued[key]

    async def modify(self, key: str, change: Change) -> GroupState | bool | None:
        """Read the group, apply ``change``, write it back if the revision is unchanged; on
        a conflict read again. ``change`` returns the new state, None to delete the group, or
        False for "no change". Returns what was written (False: nothing)."""
        assert self.kv is not None
        for _ in range(MAX_CONFLICTS):
            revision = 0
            state: GroupState | None = None
            try:
                entry = await self.kv.get(key)
                if entry.value:
                    state, revision = state_decoder.decode(entry.value), entry.revision or 0
            except NotFoundError:  # missing or deleted
                pass
            result = change(state)
            if result is False:
                if state is not None:
                    self._note(key, state)
                return False
            try:
                if result is None or result is True:  # nothing left in the group
                    if state is not None:
                        await self.kv.delete(key, last=revision)
                    return None
                data = state_encoder.encode(result)
                if state is None:
                    await self.kv.create(key, data)
                else:
                    await self.kv.update(key, data, last=revision)
            except KeyWrongLastSequenceError:
                continue
            except APIError as exc:  # delete() reports a wrong revision as a plain APIError
                if lost_race(exc):
                    continue
                raise
            return result
        raise RuntimeError(f"group {key}: {MAX_CONFLICTS} conflicting writes in a row")

    # -- knowing what is due ------------------------------------------------------------

    def _note(self, key: str, state: GroupState | None) -> None:
        self.due[key] = None if state is None else state.due()
        self.wake.set()

    async def _watching(self, watcher: KeyValue.KeyWatcher) -> None:
        """Follow the bucket; a watch that ends (a long disconnect) is started again, and
        its first pass over the current values brings ``due`` up to date."""
        while True:
            try:
                await self._watch(watcher)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching the groups failed: %s; watching again", describe(exc))
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await watcher.stop()
            try:
                assert self.kv is not None
                watcher = await self.kv.watchall()
            except Exception as exc:
                log.warning("cannot watch the groups: %s", describe(exc))

    async def _watch(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the end of what was there when the watch started
                continue
            if entry.operation in ("DEL", "PURGE") or not entry.value:
                self.due.pop(entry.key, None)
                continue
            try:
                self._note(entry.key, state_decoder.decode(entry.value))
            except Exception as exc:  # a foreign or damaged entry: never the watch's end
                log.warning("group %s: unreadable state: %s", entry.key, describe(exc))

    async def _schedule(self) -> None:
        while True:
            self.wake.clear()
            now = time.time()
            soonest = now + MAX_SLEEP
            for key, due in list(self.due.items()):
                if due is None or key in self.flushing:
                    continue
                if due <= now:
                    self.flushing[key] = asyncio.create_task(self._flush_task(key))
                else:
                    soonest = min(soonest, due)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, soonest - time.time())):
                    await self.wake.wait()

    async def _flush_task(self, key: str) -> None:
        try:
            async with self.limit:
                await self.flush(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("group %s: notification failed: %s", key, describe(exc))
            self.due[key] = time.time() + 1.0  # look again soon (the state says more)
        finally:
            self.flushing.pop(key, None)
            self.wake.set()

    # -- notifying ----------------------------------------------------------------------

    async def flush(self, key: str) -> None:
        """Claim the group if it is due; notify it; write the outcome back."""
        state = await self.modify(key, lambda s: s is not None and claim(
            s, self.me, time.time(), self.lease) and s)
        if not isinstance(state, GroupState):
            return
        group = state.notification()
        if not group.alerts:  # every alert left (cannot normally happen): drop the group
            await self.modify(key, lambda s: None)
            return
        latest = max(group.alerts, key=lambda t: t.at)
        refs = self.actions.refs(latest)
        renewing = asyncio.create_task(self._renew(key))
        try:
            outcome = await self.actions.run_group(
                group, refs, f"group\x00{key}\x00{state.created}\x00{group.number}", state.tries)
        finally:
            renewing.cancel()
        if outcome.failures:
            permanent = any(f.permanent for f in outcome.failures)
            if not permanent and state.tries < self.max_tries:
                delay = self.backoff.delay(state.tries)
                for failure in outcome.failures:
                    log.warning("group %s: %s; retrying in %.2fs", group.key, failure, delay)
                await self.modify(key, lambda s: s is not None and failed(
                    s, self.me, time.time() + delay) and s)
                return
            await self.dead_letter(group, outcome.failures, state.tries)
        done = await self.modify(key, lambda s: s is not None and notified(
            s, self.me, group, time.time()) and (s if s.alerts else None))
        if done is False:
            log.warning("group %s: lost the group while notifying (lease of %gs ran out); "
                        "another worker took it over", group.key, self.lease)
            return
        self.notified += 1
        log.info("group %s: notified %d firing, %d resolved (notification %d)", group.key,
                 len(group.firing), len(group.resolved), group.number)

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            with contextlib.suppress(Exception):
                await self.modify(key, lambda s: s is not None and renew(
                    s, self.me, time.time(), self.lease) and s)

    async def dead_letter(self, group: TriggerGroup, failures: Sequence[ActionError],
                          tries: int) -> None:
        """Every trigger of a notification that cannot be delivered, to ``triggers.dead``."""
        for trigger in group.alerts:
            await publish_dead(self.js, encoder.encode(trigger), group.rule, failures, tries,
                               msg_id=f"{trigger.id}:group{group.number}:dead",
                               extra={GROUP_HEADER: group.key})
