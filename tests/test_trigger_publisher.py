"""Trigger publishing: acked, deduplicated by id, ordered per series, retried over a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from flarebus import bus
from flarebus.config import NatsSettings
from flarebus.engine.service.metrics import EngineStats
from flarebus.engine.service.trigger_publisher import TriggerPublisher
from flarebus.events import Trigger, trigger_decoder
from flarebus.nats_server import EmbeddedNats


def trigger(rule: str, n: int, state: str = "firing", host: str = "a") -> Trigger:
    return Trigger(id=f"{rule}-{host}-{n}-{state}", rule=rule, state=state,  # type: ignore[arg-type]
                   severity="warning", metric_name="cpu.usage", value=float(n), threshold="> 80",
                   duration=1.0, labels={"host": host}, annotations={}, active_since=100.0,
                   at=100.0 + n, actions=[])


async def stream_triggers(nc: Client, rule: str) -> list[Trigger]:
    """Every trigger the stream holds for ``rule``, in stream order."""
    js = nc.jetstream()
    info = await js.stream_info(bus.TRIGGERS_STREAM, subjects_filter=f"triggers.{rule}")
    count = (info.state.subjects or {}).get(f"triggers.{rule}", 0)
    if not count:
        return []
    sub = await js.pull_subscribe(f"triggers.{rule}", config=ConsumerConfig(
        deliver_policy=DeliverPolicy.ALL))
    out: list[Trigger] = []
    while len(out) < count:
        for m in await sub.fetch(count - len(out), timeout=5):
            out.append(trigger_decoder.decode(m.data))
            await m.ack()
    await sub.unsubscribe()
    return out


class TestTriggerPublisher:
    """TriggerPublisher against the session's server."""

    async def test_published_once_with_msg_id_and_in_order(self, nc: Client) -> None:
        """Triggers land on triggers.<rule>; a resubmitted id is dropped; series order is kept."""
        js = await bus.ensure_jetstream(nc)
        stats = EngineStats()
        pub = TriggerPublisher(js, stats, lanes=4)
        pub.start()
        for n in range(20):
            pub.submit(trigger("tp-order", n, "firing" if n % 2 == 0 else "resolved"))
        pub.submit(trigger("tp-order", 0))  # the same id again: a duplicate
        assert await pub.flush(10)
        await pub.close()
        got = await stream_triggers(nc, "tp-order")
        assert [t.value for t in got] == [float(n) for n in range(20)]
        assert stats.triggers_published == 21 and pub.backlog == 0

    async def test_nothing_counts_as_acked_before_its_ack(self, nc: Client) -> None:
        """Before the lanes run, wait_acked(mark) is False at once; after, True."""
        js = await bus.ensure_jetstream(nc)
        pub = TriggerPublisher(js, EngineStats(), lanes=2)
        mark = pub.submit(trigger("tp-mark", 1))
        assert not await pub.wait_acked(mark, 0)  # nothing is published yet: cannot be acked
        pub.start()
        assert await pub.wait_acked(mark, 10)
        assert pub.acked == 1 and pub.backlog == 0
        await pub.close()


class TestServerRestart:
    """The server goes away under a running publisher."""

    async def test_wait_acked_covers_only_what_was_submitted_before(self,
                                                                    tmp_path: Path) -> None:
        """A mark is done once its triggers are acked, whatever was submitted after it."""
        server = EmbeddedNats(tmp_path / "nats")
        server.start()
        try:
            nc = await bus.connect(NatsSettings(servers=[server.url], reconnect_wait=0.2))
            pub = TriggerPublisher(await bus.ensure_jetstream(nc), EngineStats(), lanes=4,
                                   ack_timeout=0.5, backoff_max=0.5)
            pub.start()
            before = [pub.submit(trigger("tp-mark", n, host=f"h{n}")) for n in range(3)]
            assert await pub.wait_acked(before[-1], 10)
            server.kill()  # from here on no publish can be acknowledged
            after = pub.submit(trigger("tp-mark", 3, host="h3"))
            assert await pub.wait_acked(before[-1], 0)  # done: `after` is not part of the mark
            assert not await pub.wait_acked(after, 0) and pub.backlog == 1
            assert not await pub.flush(0)
            server.start()
            assert await pub.flush(30)
            assert pub.acked == 4 and pub.backlog == 0
            await pub.close()
            await nc.close()
        finally:
            server.stop()

    async def test_backlog_is_published_after_the_server_returns(self, tmp_path: Path) -> None:
        """Triggers submitted while the server is down are retried and land after restart."""
        server = EmbeddedNats(tmp_path / "nats")
        server.start()
        try:
            nc = await bus.connect(NatsSettings(servers=[server.url], reconnect_wait=0.2))
            js = await bus.ensure_jetstream(nc)
            stats = EngineStats()
            pub = TriggerPublisher(js, stats, lanes=8, ack_timeout=0.5, backoff_max=0.5)
            pub.start()
            pub.submit(trigger("tp-restart", 0))
            assert await pub.flush(10)
            server.kill()
            for n in range(1, 11):
                pub.submit(trigger("tp-restart", n, host=f"h{n}"))
            await asyncio.sleep(1.0)
            assert pub.backlog > 0
            server.start()
            assert await pub.flush(30)
            await pub.close()
            got = await stream_triggers(nc, "tp-restart")
            assert sorted(t.value for t in got) == [float(n) for n in range(11)]
            assert stats.publish_retries > 0
            await nc.close()
        finally:
            server.stop()
