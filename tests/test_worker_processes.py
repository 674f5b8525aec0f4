"""Real `flarebus worker` processes sharing one consumer: load split, kill -9, SIGTERM drain."""

from __future__ import annotations

import signal
from collections import Counter, defaultdict

from nats.aio.client import Client

from tests.fleet import Fleet
from tests.plugin_pkg.harness import (
    consumer_idle,
    fresh_stream,
    publish,
    trigger,
    wait_until,
)


async def test_three_workers_share_the_load(private_nc: Client, fleet: Fleet) -> None:
    """300 triggers, three processes: every trigger's action ran and every worker ran some."""
    js = await fresh_stream(private_nc)
    for _ in range(3):
        fleet.start(concurrency=8)
    await fleet.ready(js, 3)
    triggers = [trigger("load", actions=[], labels={"sleep": "0.01"}) for _ in range(300)]
    await publish(js, triggers)
    await wait_until(lambda: len(fleet.ended()) == 300, 60, what="300 triggers done")
    await wait_until(lambda: consumer_idle(js, fleet.consumer), what="all acked")
    per_worker = Counter(e["pid"] for e in fleet.events() if e["event"] == "end")
    assert set(per_worker) == {p.pid for p in fleet.procs}, per_worker
    assert fleet.ended() == {t.id for t in triggers}


async def test_kill_9_mid_action_every_trigger_still_completes(
        private_nc: Client, fleet: Fleet,
) -> None:
    """A worker killed mid-action: its triggers are redelivered, each run at most once more."""
    js = await fresh_stream(private_nc)
    victim = fleet.start(concurrency=4)
    survivor = fleet.start(concurrency=4)
    await fleet.ready(js, 2)
    triggers = [trigger("crash", actions=["recorder"], labels={"sleep": "0.4"})
                for _ in range(24)]
    await publish(js, triggers)

    def victim_mid_action() -> bool:
        starts = {e["id"] for e in fleet.events()
                  if e["pid"] == victim.pid and e["event"] == "start"}
        ends = {e["id"] for e in fleet.events() if e["pid"] == victim.pid and e["event"] == "end"}
        return bool(starts - ends)

    await wait_until(victim_mid_action, 20, what="the victim mid-action")
    victim.kill()  # SIGKILL: no drain, no nak
    victim.wait(10)
    await wait_until(lambda: len(fleet.ended()) == 24, 30, what="every trigger completed")
    events = fleet.events()
    starts: dict[object, list[object]] = defaultdict(list)
    for e in events:
        if e["event"] == "start":
            starts[e["id"]].append(e["pid"])
    victim_unfinished = {e["id"] for e in events if e["pid"] == victim.pid
                         and e["event"] == "start"} - {
        e["id"] for e in events if e["pid"] == victim.pid and e["event"] == "end"}
    assert victim_unfinished, "the kill interrupted nothing"
    assert all(len(pids) <= 2 for pids in starts.values()), starts
    for trigger_id in victim_unfinished:
        assert starts[trigger_id] == [victim.pid, survivor.pid]  # ran once more, elsewhere
    assert survivor.poll() is None


async def test_sigterm_drains_in_flight_actions_and_exits_0(
        private_nc: Client, fleet: Fleet,
) -> None:
    """SIGTERM: in-flight actions finish, nothing more is fetched, exit code 0, nothing lost."""
    js = await fresh_stream(private_nc)
    first = fleet.start(concurrency=2, grace="10s")
    await fleet.ready(js, 1)
    triggers = [trigger("drain", actions=["recorder"], labels={"sleep": "0.3"})
                for _ in range(10)]
    await publish(js, triggers)
    await wait_until(lambda: any(e["event"] == "start" for e in fleet.events()), 20,
                     what="a first action")
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0, fleet.log(0)
    started = {e["id"] for e in fleet.events() if e["event"] == "start"}
    assert started <= fleet.ended()  # everything that started, finished before exit
    fleet.start(concurrency=4)
    await wait_until(lambda: fleet.ended() == {t.id for t in triggers}, 30,
                     what="the rest done by the next worker")


async def test_sigterm_hands_back_what_cannot_finish_within_grace(
        private_nc: Client, fleet: Fleet) -> None:
    """Past the grace period, in-flight triggers are nak'ed and another worker runs them."""
    js = await fresh_stream(private_nc)
    first = fleet.start(concurrency=2, grace="200ms")
    await fleet.ready(js, 1)
    triggers = [trigger("handback", actions=["recorder"], labels={"sleep": "1.5"})
                for _ in range(2)]
    await publish(js, triggers)
    await wait_until(lambda: sum(e["event"] == "start" for e in fleet.events()) == 2, 20,
                     what="both started")
    first.send_signal(signal.SIGTERM)
    assert first.wait(20) == 0, fleet.log(0)
    assert fleet.ended() == set()
    fleet.start(concurrency=2)
    await wait_until(lambda: fleet.ended() == {t.id for t in triggers}, 30,
                     what="handed-back triggers done")
