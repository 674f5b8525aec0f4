"""Grouping with real worker processes: one notification per group, complete, whatever dies."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from flarebus import bus
from flarebus.actions.groupstate import GroupState, state_decoder
from flarebus.events import GroupSpec, Trigger
from tests.fleet import Fleet
from tests.http_support import RecordingServer
from tests.plugin_pkg.harness import fresh_stream, publish, trigger, wait_until

HOSTS = 10
SERIES = 200


@pytest.fixture
def receiver() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.stop()


def config_file(tmp: Path, hook: str, lease: str = "30s") -> tuple[str, ...]:
    path = tmp / "flarebus.yaml"
    path.write_text(f"plugins:\n  webhook:\n    config: {{url: '{hook}'}}\n"
                    f"group:\n  lease: {lease}\n")
    return ("--config", str(path))


def storm(rule: str, wait: float) -> list[Trigger]:
    """SERIES firing series of one rule over HOSTS hosts, grouped by host."""
    spec = GroupSpec(by=["host"], wait=wait, interval=3600.0, repeat=0.0)
    return [msgspec.structs.replace(
        trigger(rule, actions=["webhook"], labels={"host": f"h{i % HOSTS}", "disk": f"d{i}"}),
        group=spec) for i in range(SERIES)]


def bodies(receiver: RecordingServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in list(receiver.received) if r.path == path]


async def groups_of(js: JetStreamContext, rule: str) -> list[GroupState]:
    kv = await bus.groups_bucket(js)
    try:
        keys = await kv.keys()
    except Exception:  # NoKeysError
        return []
    out = []
    for key in keys:
        if key.startswith(f"{rule}."):
            entry = await kv.get(key)
            if entry.value:
                out.append(state_decoder.decode(entry.value))
    return out


async def all_notified(js: JetStreamContext, rule: str, groups: int) -> bool:
    """Every group notified once and settled: no owner, nothing changed since."""
    states = await groups_of(js, rule)
    return len(states) == groups and all(
        s.number == 1 and not s.owner and not s.changed() for s in states)


def assert_one_complete_notification_per_group(sent: list[dict[str, Any]],
                                               triggers: list[Trigger]) -> None:
    assert len(sent) == HOSTS, [b["groupLabels"] for b in sent]
    assert sorted(b["groupLabels"]["host"] for b in sent) == sorted(
        f"h{i}" for i in range(HOSTS))
    for body in sent:
        host = body["groupLabels"]["host"]
        expected = {t.labels["disk"] for t in triggers if t.labels["host"] == host}
        assert {a["labels"]["disk"] for a in body["alerts"]} == expected
        assert len(body["alerts"]) == len(expected) == SERIES // HOSTS


async def four_workers(nc: Client, fleet: Fleet, args: tuple[str, ...]) -> JetStreamContext:
    js = await fresh_stream(nc)
    for _ in range(4):
        fleet.start(concurrency=8, args=args)
    await fleet.ready(js, 4)
    return js


async def test_200_series_4_workers_one_notification_per_group(
        private_nc: Client, fleet: Fleet, receiver: RecordingServer, tmp_path: Path) -> None:
    """200 series fire at once over 4 workers: exactly one webhook per host, each with every
    alert of that host."""
    js = await four_workers(private_nc, fleet, config_file(tmp_path, f"{receiver.url}/storm"))
    rule = f"storm{time.time_ns() % 10**9}"
    triggers = storm(rule, wait=3.0)
    await publish(js, triggers)
    await wait_until(lambda: len(bodies(receiver, "/storm")) >= HOSTS, 60,
                     what="a notification per group")
    await wait_until(lambda: all_notified(js, rule, HOSTS), 30, what="every group settled")
    assert_one_complete_notification_per_group(bodies(receiver, "/storm"), triggers)
    logs = "".join(fleet.log(i) for i in range(4))
    assert logs.count(": notified 20 firing, 0 resolved") == HOSTS


async def test_a_worker_killed_during_wait_loses_nothing(
        private_nc: Client, fleet: Fleet, receiver: RecordingServer, tmp_path: Path) -> None:
    """kill -9 a worker while groups wait (and while it holds triggers): still one complete
    notification per group."""
    js = await four_workers(private_nc, fleet, config_file(tmp_path, f"{receiver.url}/kill"))
    victim = fleet.procs[0]
    rule = f"kill{time.time_ns() % 10**9}"
    triggers = storm(rule, wait=6.0)
    await publish(js, triggers)

    async def recording_started() -> bool:
        return bool(await groups_of(js, rule))

    await wait_until(recording_started, 20, what="the first group recorded")
    victim.kill()  # SIGKILL, within the groups' wait
    victim.wait(10)
    assert not bodies(receiver, "/kill"), "a group was notified before the kill"
    await wait_until(lambda: len(bodies(receiver, "/kill")) >= HOSTS, 60,
                     what="a notification per group")
    await wait_until(lambda: all_notified(js, rule, HOSTS), 30, what="every group settled")
    assert_one_complete_notification_per_group(bodies(receiver, "/kill"), triggers)


async def test_an_owner_killed_mid_notification_is_taken_over(
        private_nc: Client, fleet: Fleet, receiver: RecordingServer, tmp_path: Path) -> None:
    """The worker notifying a group dies mid-POST: after its lease another worker sends the
    whole group."""
    js = await fresh_stream(private_nc)
    args = config_file(tmp_path, f"{receiver.url}/takeover", lease="2s")
    owner = fleet.start(concurrency=4, args=args)
    await fleet.ready(js, 1)
    rule = f"takeover{time.time_ns() % 10**9}"
    triggers = [t for t in storm(rule, wait=0.5) if t.labels["host"] == "h0"]
    receiver.stall_next = 30.0  # the owner's POST hangs
    await publish(js, triggers)
    await wait_until(lambda: len(bodies(receiver, "/takeover")) == 1, 30,
                     what="the owner's POST")
    owner.kill()
    owner.wait(10)
    fleet.start(concurrency=4, args=args)
    await wait_until(lambda: len(bodies(receiver, "/takeover")) == 2, 30,
                     what="the takeover's POST")
    sent = bodies(receiver, "/takeover")
    assert sent[0] == sent[1]  # the same notification, complete
    assert len(sent[1]["alerts"]) == SERIES // HOSTS

    async def settled() -> bool:
        states = await groups_of(js, rule)
        return len(states) == 1 and states[0].number == 1 and states[0].tries == 0

    await wait_until(settled, 30, what="the group settled after the takeover")
