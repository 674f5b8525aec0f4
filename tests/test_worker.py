"""The worker in-process on a real nats-server: retries, dead letters, timeouts, idempotency."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import msgspec
from nats.aio.client import Client

from flarebus import Action, Sink, bus
from flarebus.actions.attempt import done_key
from flarebus.actions.deadletter import ERROR_HEADER, PLUGIN_HEADER, TRIES_HEADER
from flarebus.config import PluginSettings
from flarebus.events import ActionRef, Trigger, trigger_decoder
from tests.plugin_pkg.harness import (
    consumer_idle,
    fresh_stream,
    publish,
    running_worker,
    settings,
    trigger,
    wait_until,
)
from tests.support import collect, span_exporter


class Recorder(Action):
    """Counts runs per trigger id; fails while ``failures[id]`` is positive."""

    def __init__(self, name: str = "rec", fail_first: int = 0, always_fail: bool = False) -> None:
        self.name = name  # type: ignore[misc]
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.runs: Counter[str] = Counter()
        self.done: set[str] = set()

    async def execute(self, trigger: Trigger) -> None:
        self.runs[trigger.id] += 1
        if self.always_fail or self.runs[trigger.id] <= self.fail_first:
            raise RuntimeError(f"boom #{self.runs[trigger.id]}")
        self.done.add(trigger.id)


class Hangs(Action):
    """Hangs on its first run of each trigger (until cancelled), then succeeds."""

    name = "hangs"

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.cancelled: list[str] = []
        self.done: set[str] = set()

    async def execute(self, trigger: Trigger) -> None:
        self.runs[trigger.id] += 1
        if self.runs[trigger.id] == 1:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.append(trigger.id)
                raise
        self.done.add(trigger.id)


async def dead_letters(private_nc: Client, rule: str) -> Any:
    return await collect(private_nc, bus.dead_letter_subject(rule))


async def test_all_actions_succeed_and_trigger_is_acked(private_nc: Client) -> None:
    """Every action of every trigger runs once and the consumer ends with nothing pending."""
    js = await fresh_stream(private_nc)
    a, b = Recorder("rec-a"), Recorder("rec-b")
    cfg = settings()
    triggers = [trigger(actions=["rec-a", "rec-b"]) for _ in range(20)]
    async with running_worker(private_nc, a, b, worker=cfg):
        await publish(js, triggers)
        await wait_until(lambda: len(a.done) == 20 and len(b.done) == 20, what="all actions")
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="all acked")
    assert set(a.runs.values()) == {1} and set(b.runs.values()) == {1}


async def test_fails_twice_then_succeeds(private_nc: Client) -> None:
    """A plugin failing twice is retried with backoff and the trigger completes."""
    js = await fresh_stream(private_nc)
    dead = await dead_letters(private_nc, "flaky")
    rec = Recorder(fail_first=2)
    cfg = settings(max_tries=5)
    t = trigger("flaky", actions=["rec"])
    async with running_worker(private_nc, rec, worker=cfg):
        await publish(js, [t])
        await wait_until(lambda: t.id in rec.done, what="third try")
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked")
    assert rec.runs[t.id] == 3
    assert dead.messages == []


async def test_always_failing_plugin_is_dead_lettered_with_its_error(private_nc: Client) -> None:
    """After max_tries the trigger lands on triggers.dead.<rule> with plugin, error and tries."""
    js = await fresh_stream(private_nc)
    dead = await dead_letters(private_nc, "doomed")
    rec = Recorder(always_fail=True)
    cfg = settings(max_tries=3)
    t = trigger("doomed", actions=["rec"])
    async with running_worker(private_nc, rec, worker=cfg):
        await publish(js, [t])
        [msg] = await dead.wait_for(1)
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked after dead letter")
    assert rec.runs[t.id] == 3
    assert msg.headers[PLUGIN_HEADER] == "rec"
    assert "RuntimeError: boom #3" in msg.headers[ERROR_HEADER]
    assert msg.headers[TRIES_HEADER] == "3"
    assert trigger_decoder.decode(msg.data) == t
    stored = await js.get_last_msg(bus.TRIGGERS_STREAM, bus.dead_letter_subject("doomed"))
    assert trigger_decoder.decode(stored.data).id == t.id  # kept in the stream, not just sent


async def test_hanging_plugin_is_cancelled_and_retried(private_nc: Client) -> None:
    """A plugin past its timeout is cancelled, the failure retried, and the retry completes."""
    js = await fresh_stream(private_nc)
    hangs = Hangs()
    cfg = settings()
    t = trigger("hang", actions=["hangs"])
    async with running_worker(private_nc, hangs, worker=cfg,
                              plugin_settings={"hangs": PluginSettings(timeout=0.3)}):
        await publish(js, [t])
        await wait_until(lambda: t.id in hangs.done, what="retry after timeout")
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked")
    assert hangs.cancelled == [t.id]
    assert hangs.runs[t.id] == 2


async def test_on_retry_only_the_failed_action_runs_again(private_nc: Client) -> None:
    """Two actions, the second fails once: the first ran once, the second twice."""
    js = await fresh_stream(private_nc)
    first, second = Recorder("first"), Recorder("second", fail_first=1)
    cfg = settings()
    t = trigger("pair", actions=["first", "second"])
    async with running_worker(private_nc, first, second, worker=cfg):
        await publish(js, [t])
        await wait_until(lambda: t.id in second.done, what="second action's retry")
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked")
    assert first.runs[t.id] == 1
    assert second.runs[t.id] == 2
    kv = await bus.actions_done_bucket(js)
    assert (await kv.get(done_key(t.id, 0, "first"))).value == b"1"


async def test_redelivered_trigger_skips_actions_recorded_done(private_nc: Client) -> None:
    """A completion recorded in the KV bucket (by a worker that died before acking) is honoured."""
    js = await fresh_stream(private_nc)
    first, second = Recorder("first"), Recorder("second")
    t = trigger("recorded", actions=["first", "second"])
    kv = await bus.actions_done_bucket(js)
    await kv.put(done_key(t.id, 0, "first"), b"1")
    cfg = settings()
    # The first delivery trusts nothing is done; make this one a redelivery by nak-ing it once.
    await js.add_consumer(bus.TRIGGERS_STREAM, durable_name=cfg.consumer,
                          filter_subject=bus.TRIGGERS_FILTER, ack_wait=cfg.ack_wait)
    await publish(js, [t])
    sub = await js.pull_subscribe_bind(durable=cfg.consumer, stream=bus.TRIGGERS_STREAM)
    [msg] = await sub.fetch(1, timeout=5)
    await msg.nak()
    await sub.unsubscribe()
    async with running_worker(private_nc, first, second, worker=cfg):
        await wait_until(lambda: t.id in second.done, what="second action")
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked")
    assert first.runs[t.id] == 0
    assert second.runs[t.id] == 1


async def test_unknown_plugin_is_dead_lettered_at_once(private_nc: Client) -> None:
    """A trigger naming no known plugin cannot succeed: dead-lettered on the first try."""
    js = await fresh_stream(private_nc)
    dead = await dead_letters(private_nc, "typo")
    async with running_worker(private_nc, worker=settings(max_tries=5)):
        await publish(js, [trigger("typo", actions=["lgo"])])
        [msg] = await dead.wait_for(1)
    assert msg.headers[PLUGIN_HEADER] == "lgo"
    assert "no plugin named 'lgo'" in msg.headers[ERROR_HEADER]
    assert msg.headers[TRIES_HEADER] == "1"


async def test_invalid_rule_action_config_is_dead_lettered_with_the_field(
        private_nc: Client,
) -> None:
    """A rule's action config that fails the plugin's schema never reaches the plugin."""
    js = await fresh_stream(private_nc)
    dead = await dead_letters(private_nc, "badcfg")
    t = trigger("badcfg", actions=[ActionRef(plugin="http", config={"timeout": "soon"})])
    async with running_worker(private_nc, worker=settings()):
        await publish(js, [t])
        [msg] = await dead.wait_for(1)
    assert "timeout" in msg.headers[ERROR_HEADER]
    assert "rule 'badcfg'" in msg.headers[ERROR_HEADER]


async def test_undecodable_trigger_is_dead_lettered_not_lost(private_nc: Client) -> None:
    """A payload that is not a Trigger goes to the dead-letter subject of its subject's rule."""
    js = await fresh_stream(private_nc)
    dead = await dead_letters(private_nc, "garbled")
    cfg = settings()
    async with running_worker(private_nc, worker=cfg):
        await js.publish(bus.trigger_subject("garbled"), b'{"id": 1}')
        [msg] = await dead.wait_for(1)
        await wait_until(lambda: consumer_idle(js, cfg.consumer), what="acked")
    assert msg.data == b'{"id": 1}'
    assert "invalid trigger" in msg.headers[ERROR_HEADER]


async def test_empty_actions_run_the_default_action(private_nc: Client) -> None:
    """A trigger naming no action runs ACTION_PLUGIN (worker.default_action)."""
    js = await fresh_stream(private_nc)
    rec = Recorder("fallback")
    t = trigger("noaction", actions=[])
    async with running_worker(private_nc, rec, worker=settings(default_action="fallback")):
        await publish(js, [t])
        await wait_until(lambda: t.id in rec.done, what="default action")


class BlockingAction(Action):
    """A plain ``def`` plugin that blocks: it must run off the event loop thread."""

    name = "blocking"

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.live = 0
        self.peak = 0
        self.lock = threading.Lock()

    def execute(self, trigger: Trigger) -> None:  # type: ignore[override]
        with self.lock:
            self.live += 1
            self.peak = max(self.peak, self.live)
        threading.Event().wait(0.05)
        with self.lock:
            self.live -= 1
            self.threads.append(threading.current_thread().name)


async def test_sync_plugin_runs_in_thread_pool_within_its_concurrency_limit(
        private_nc: Client,
) -> None:
    """A blocking def plugin runs in the pool, never on the loop, at most `concurrency` at once."""
    js = await fresh_stream(private_nc)
    blocking = BlockingAction()
    async with running_worker(private_nc, blocking, worker=settings(concurrency=8),
                              plugin_settings={"blocking": PluginSettings(concurrency=2)}):
        await publish(js, [trigger("sync", actions=["blocking"]) for _ in range(12)])
        await wait_until(lambda: len(blocking.threads) == 12, what="12 blocking runs")
    assert threading.main_thread().name not in blocking.threads
    assert all(name.startswith("flarebus-plugin") for name in blocking.threads)
    assert 1 <= blocking.peak <= 2


class Notes(Sink):
    name = "notes"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def notify(self, rule_name: str, msg: str) -> None:
        self.seen.append((rule_name, msg))


async def test_sink_runs_wherever_an_action_does(private_nc: Client) -> None:
    """A sink named as a rule's action gets notify(rule_name, msg) with the summary."""
    js = await fresh_stream(private_nc)
    notes = Notes()
    t = msgspec.structs.replace(trigger("disk", actions=["notes"]),
                                annotations={"summary": "disk 93% on web-1"})
    async with running_worker(private_nc, notes):
        await publish(js, [t])
        await wait_until(lambda: notes.seen, what="notify")
    assert notes.seen == [("disk", "disk 93% on web-1")]


async def test_action_span_is_a_child_of_the_trigger_trace(private_nc: Client) -> None:
    """`action.execute` spans continue the trace whose context the trigger's headers carry."""
    exporter = span_exporter()
    js = await fresh_stream(private_nc)
    rec = Recorder()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    t = trigger("traced", actions=["rec"])
    async with running_worker(private_nc, rec):
        await publish(js, [t], headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        await wait_until(lambda: t.id in rec.done, what="traced action")
        await wait_until(lambda: any(s.name == "action.execute"
                                     for s in exporter.get_finished_spans()), what="span")
    [span] = [s for s in exporter.get_finished_spans() if s.name == "action.execute"]
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes["flarebus.plugin"] == "rec"


def test_done_keys_are_valid_kv_keys_for_any_trigger_id() -> None:
    """Trigger ids and plugin names of any content map to distinct, valid KV keys."""
    keys = {done_key('r{host="a b"}:1.0/firing', i, p) for i in range(3) for p in ("x", "y.z")}
    assert len(keys) == 6
    assert all(k.isalnum() for k in keys)
