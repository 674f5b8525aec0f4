"""Grouping in a real worker: one notification per group, on:, retries, leases, config."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import APIError

from flarebus import bus
from flarebus.actions.deadletter import TRIES_HEADER
from flarebus.actions.grouping import GROUP_HEADER
from flarebus.actions.groupstate import (
    state_decoder,
)
from flarebus.events import ActionRef, GroupSpec, Trigger, trigger_decoder
from flarebus.grouping import (
    GroupSettings,
    TriggerGroup,
    group_key,
)
from flarebus.kv import WRONG_REVISION
from flarebus.plugin import Action
from tests.plugin_pkg.harness import (
    fresh_stream,
    publish,
    running_worker,
    settings,
    trigger,
    wait_until,
)
from tests.support import collect
from tests.test_groupstate import resolved
from tests.test_worker import Notes

# -- a real worker ---------------------------------------------------------------------


class GroupRecorder(Action):
    """Records the groups (and single triggers) it is given."""

    def __init__(self, name: str = "grouprec") -> None:
        self.name = name  # type: ignore[misc]
        self.groups: list[TriggerGroup] = []
        self.triggers: list[Trigger] = []

    async def execute(self, trigger: Trigger) -> None:
        self.triggers.append(trigger)

    async def execute_group(self, group: TriggerGroup) -> None:
        self.groups.append(group)


class PlainRecorder(Action):
    """An action that knows nothing of groups."""

    name = "plainrec"

    def __init__(self) -> None:
        self.triggers: list[Trigger] = []

    async def execute(self, trigger: Trigger) -> None:
        self.triggers.append(trigger)


def grouped(host: str, series: str, *actions: str | ActionRef, rule: str = "grp",
            wait: float = 1.0) -> Trigger:
    t = trigger(rule, actions=actions, labels={"host": host, "series": series})
    return msgspec.structs.replace(
        t, group=GroupSpec(by=["host"], wait=wait, interval=1.0, repeat=0.0))


async def test_a_worker_notifies_each_group_once_with_all_its_alerts(nc: Client) -> None:
    """Six triggers, two hosts: two notifications, three alerts each; then the resolutions
    together in one more per group."""
    js = await fresh_stream(nc)
    rec = GroupRecorder()
    rule = f"grp{time.time_ns() % 10**9}"
    firing = [grouped(h, str(i), "grouprec", rule=rule) for h in "ab" for i in range(3)]
    async with running_worker(nc, rec):
        await publish(js, firing)
        await wait_until(lambda: len(rec.groups) == 2, 20, what="two group notifications")
        assert sorted(len(g.firing) for g in rec.groups) == [3, 3]
        assert {g.labels["host"] for g in rec.groups} == {"a", "b"}
        await publish(js, [resolved(t) for t in firing])
        await wait_until(lambda: len(rec.groups) == 4, 20, what="the resolutions")
        assert sorted(len(g.resolved) for g in rec.groups[2:]) == [3, 3]
        kv = await bus.groups_bucket(js)
        await wait_until(lambda: _no_group_of(kv, rule), 10, what="the groups deleted")
    assert rec.triggers == []


async def _no_group_of(kv: object, rule: str) -> bool:
    try:
        keys = await kv.keys()  # type: ignore[attr-defined]
    except Exception:  # NoKeysError: the bucket is empty
        return True
    return not any(k.startswith(f"{rule}.") for k in keys)


async def test_an_action_without_execute_group_runs_per_alert(nc: Client) -> None:
    """A plugin that only implements execute(trigger) keeps working: once per alert."""
    js = await fresh_stream(nc)
    plain = PlainRecorder()
    rule = f"plain{time.time_ns() % 10**9}"
    firing = [grouped("a", str(i), "plainrec", rule=rule, wait=0.5) for i in range(3)]
    async with running_worker(nc, plain):
        await publish(js, firing)
        await wait_until(lambda: len(plain.triggers) == 3, 20, what="three executes")
    assert {t.id for t in plain.triggers} == {t.id for t in firing}


async def test_on_filters_which_transitions_an_action_hears(nc: Client) -> None:
    """`on: [firing]` and `on: [resolved]`: each action gets only its transitions, grouped
    or not."""
    js = await fresh_stream(nc)
    fires, resolves = GroupRecorder("firerec"), GroupRecorder("resolverec")
    refs = (ActionRef("firerec", on=["firing"]), ActionRef("resolverec", on=["resolved"]))
    single = trigger(f"single{time.time_ns() % 10**9}", actions=refs)
    rule = f"ongrp{time.time_ns() % 10**9}"
    group = [grouped("a", str(i), *refs, rule=rule, wait=0.5) for i in range(2)]
    async with running_worker(nc, fires, resolves):
        await publish(js, [single, resolved(single), *group])
        await wait_until(lambda: len(fires.groups) == 1 and len(fires.triggers) == 1, 20,
                         what="the firings")
        await publish(js, [resolved(t) for t in group])
        await wait_until(lambda: len(resolves.groups) == 1 and len(resolves.triggers) == 1,
                         20, what="the resolutions")
    assert [t.state for t in fires.triggers] == ["firing"]
    assert [t.state for t in resolves.triggers] == ["resolved"]
    assert [len(g.firing) for g in fires.groups] == [2] and not fires.groups[0].resolved
    assert [len(g.resolved) for g in resolves.groups] == [2]
    assert not resolves.groups[0].firing


class FlakyGroups(GroupRecorder):
    """Fails its first ``fail_first`` group runs (or all of them)."""

    def __init__(self, fail_first: int = 0, always: bool = False) -> None:
        super().__init__("flakygroups")
        self.fail_first, self.always, self.tries = fail_first, always, 0

    async def execute_group(self, group: TriggerGroup) -> None:
        self.tries += 1
        if self.always or self.tries <= self.fail_first:
            raise RuntimeError(f"group boom #{self.tries}")
        await super().execute_group(group)


async def test_a_failing_group_action_is_retried_then_succeeds_once(nc: Client) -> None:
    """Two failures, then success: the group is notified once, complete."""
    js = await fresh_stream(nc)
    flaky = FlakyGroups(fail_first=2)
    rule = f"flaky{time.time_ns() % 10**9}"
    async with running_worker(nc, flaky):
        await publish(js, [grouped("a", str(i), "flakygroups", rule=rule, wait=0.2)
                           for i in range(4)])
        await wait_until(lambda: len(flaky.groups) == 1, 20, what="the third try")
    assert flaky.tries == 3 and len(flaky.groups[0].firing) == 4


async def test_a_group_action_failing_every_try_is_dead_lettered(nc: Client) -> None:
    """After max_tries every trigger of the notification is on triggers.dead.<rule>, with
    the group's key; the group moves on."""
    js = await fresh_stream(nc)
    doomed = FlakyGroups(always=True)
    rule = f"doomed{time.time_ns() % 10**9}"
    dead = await collect(nc, bus.dead_letter_subject(rule))
    firing = [grouped("a", str(i), "flakygroups", rule=rule, wait=0.2) for i in range(3)]
    async with running_worker(nc, doomed):
        await publish(js, firing)
        messages = await dead.wait_for(3, timeout=30)
    assert doomed.tries == 3  # FAST: max_tries 3
    assert {trigger_decoder.decode(m.data).id for m in messages} == {t.id for t in firing}
    assert {m.headers[GROUP_HEADER] for m in messages} == {
        group_key({"alertname": rule, "host": "a"})}
    assert all(m.headers[TRIES_HEADER] == "3" for m in messages)


async def test_a_sink_without_execute_group_gets_one_message_per_group(nc: Client) -> None:
    """notify(rule, msg) once, the message listing every alert."""
    js = await fresh_stream(nc)
    note = Notes()
    rule = f"note{time.time_ns() % 10**9}"
    async with running_worker(nc, note):
        await publish(js, [grouped("a", str(i), "notes", rule=rule, wait=0.2)
                           for i in range(3)])
        await wait_until(lambda: len(note.seen) == 1, 20, what="the message")
    ((name, text),) = note.seen
    assert name == rule
    assert text.splitlines()[0] == f"[FIRING:3] {rule} host=a" and len(text.splitlines()) == 4


class Slow(GroupRecorder):
    """Takes ``seconds`` per group: longer than the lease it runs under."""

    def __init__(self, seconds: float) -> None:
        super().__init__("slow")
        self.seconds = seconds

    async def execute_group(self, group: TriggerGroup) -> None:
        await asyncio.sleep(self.seconds)
        await super().execute_group(group)


async def test_an_owner_renews_its_lease_while_a_slow_action_runs(nc: Client) -> None:
    """An action three times longer than the lease, two workers: the owner keeps the group
    (no takeover), and it is notified once."""
    js = await fresh_stream(nc)
    slow_a, slow_b = Slow(1.5), Slow(1.5)
    rule = f"slow{time.time_ns() % 10**9}"
    lease = GroupSettings(lease=0.5)
    shared = settings()
    async with running_worker(nc, slow_a, worker=shared, grouping=lease), \
            running_worker(nc, slow_b, worker=shared, grouping=lease):
        await publish(js, [grouped("a", str(i), "slow", rule=rule, wait=0.2) for i in range(3)])
        await wait_until(lambda: slow_a.groups or slow_b.groups, 20, what="the notification")
        kv = await bus.groups_bucket(js)
        await wait_until(lambda: _settled(kv, rule), 20,
                         what="the group settled")
    assert len(slow_a.groups) + len(slow_b.groups) == 1


async def _settled(kv: object, rule: str) -> bool:
    for key in await kv.keys():  # type: ignore[attr-defined]
        if key.startswith(f"{rule}."):
            state = state_decoder.decode((await kv.get(key)).value)  # type: ignore[attr-defined]
            return state.number == 1 and not state.owner
    return False


async def test_the_configs_group_section_groups_rules_without_their_own(nc: Client) -> None:
    """With `group:` in the config, a rule without one is grouped; `group: false` is not."""
    js = await fresh_stream(nc)
    rec = GroupRecorder()
    rule = f"cfg{time.time_ns() % 10**9}"
    plain = [trigger(rule, actions=["grouprec"], labels={"host": "a", "n": str(i)})
             for i in range(3)]
    opted_out = msgspec.structs.replace(trigger(f"{rule}x", actions=["grouprec"]),
                                        group=GroupSpec(enabled=False))
    async with running_worker(nc, rec, grouping=GroupSettings(by=["host"], wait=0.3)):
        await publish(js, [*plain, opted_out])
        await wait_until(lambda: rec.groups and rec.triggers, 20, what="group and trigger")
    assert [len(g.firing) for g in rec.groups] == [3]
    assert [t.id for t in rec.triggers] == [opted_out.id]


async def test_an_unchanged_firing_group_is_sent_again_every_repeat(nc: Client) -> None:
    """repeat: the same alerts again, as a new notification number."""
    js = await fresh_stream(nc)
    rec = GroupRecorder()
    rule = f"rep{time.time_ns() % 10**9}"
    t = msgspec.structs.replace(trigger(rule, actions=["grouprec"]), group=GroupSpec(
        wait=0.2, interval=0.2, repeat=0.5))
    async with running_worker(nc, rec):
        await publish(js, [t])
        await wait_until(lambda: len(rec.groups) >= 3, 20, what="two repeats")
    assert [g.number for g in rec.groups[:3]] == [0, 1, 2]
    assert all([a.id for a in g.alerts] == [t.id] for g in rec.groups)


async def test_a_stale_delete_is_refused_as_a_conflict(nc: Client) -> None:
    """JetStream refuses a delete at an old revision with a code the grouper retries on, so
    a group is never deleted over a trigger written since it was read."""
    js = await fresh_stream(nc)
    kv = await bus.groups_bucket(js)
    key = f"stale.{time.time_ns()}"
    first = await kv.put(key, b"{}")
    await kv.put(key, b"{}")
    with pytest.raises(APIError) as info:
        await kv.delete(key, last=first)
    assert info.value.err_code in WRONG_REVISION
    await kv.delete(key)
