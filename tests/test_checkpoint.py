"""Checkpoints in KV: incremental writes, deletes, restore, waiting for trigger acks."""

from __future__ import annotations

import contextlib

from nats.aio.client import Client
from nats.js.kv import KeyValue

from flarebus import bus
from flarebus.engine.service.checkpoint import STATE_PREFIX, Checkpointer, read_entries
from flarebus.engine.service.metrics import EngineStats
from flarebus.engine.service.trigger_publisher import TriggerPublisher
from tests.test_trigger_publisher import trigger


class DirtySource:
    """Stands in for Evaluator.take_dirty(): hands out what the test marks as changed."""

    def __init__(self) -> None:
        self.changes: dict[str, bytes | None] = {}

    def take_dirty(self) -> dict[str, bytes | None]:
        out, self.changes = self.changes, {}
        return out


async def fresh_bucket(nc: Client, name: str) -> KeyValue:
    js = nc.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_key_value(name)
    from nats.js.api import KeyValueConfig
    return await js.create_key_value(KeyValueConfig(bucket=name, history=1))


class TestCheckpointer:
    """Checkpointer + read_entries on the session's server."""

    async def test_incremental_writes_deletes_and_restore(self, nc: Client) -> None:
        """Only dirty keys are written; deletes remove keys; read_entries returns the live set."""
        js = await bus.ensure_jetstream(nc)
        kv = await fresh_bucket(nc, "CKPT_TEST_1")
        source = DirtySource()
        stats = EngineStats()
        pub = TriggerPublisher(js, stats, lanes=2)
        pub.start()
        ckpt = Checkpointer(js, kv, source.take_dirty, pub, stats)
        assert await read_entries(kv) == {}
        source.changes = {f"r.{i:04x}": b"v1-%d" % i for i in range(3000)}
        assert await ckpt.checkpoint() == 3000
        assert await ckpt.checkpoint() == 0  # nothing changed: nothing written
        source.changes = {"r.0000": b"v2", "r.0001": None}
        assert await ckpt.checkpoint() == 2
        entries = await read_entries(kv)
        assert len(entries) == 2999
        assert entries["r.0000"] == b"v2" and "r.0001" not in entries
        assert entries["r.0bb7"] == b"v1-2999"
        assert (await kv.get(STATE_PREFIX + "r.0002")).value == b"v1-2"
        await pub.close()

    async def test_state_waits_for_its_triggers(self, nc: Client) -> None:
        """A checkpoint is not written while a trigger submitted before it is unacknowledged."""
        js = await bus.ensure_jetstream(nc)
        kv = await fresh_bucket(nc, "CKPT_TEST_2")
        source = DirtySource()
        stats = EngineStats()
        pub = TriggerPublisher(js, stats, lanes=2)  # lanes not started: nothing gets acked
        ckpt = Checkpointer(js, kv, source.take_dirty, pub, stats)
        pub.submit(trigger("ckpt-wait", 1))
        source.changes = {"r.1": b"firing"}
        assert await ckpt.checkpoint(publish_timeout=0.3) == 0
        assert await read_entries(kv) == {}
        assert ckpt.unsaved == 1  # kept for the next round
        pub.start()
        assert await ckpt.checkpoint() == 1
        assert await read_entries(kv) == {"r.1": b"firing"}
        await pub.close()

    async def test_meta_keys_are_separate_from_state(self, nc: Client) -> None:
        """The summary lives under meta.; restoring state does not see it."""
        js = await bus.ensure_jetstream(nc)
        kv = await fresh_bucket(nc, "CKPT_TEST_3")
        source = DirtySource()
        pub = TriggerPublisher(js, EngineStats())
        ckpt = Checkpointer(js, kv, source.take_dirty, pub, EngineStats())
        assert await ckpt.put_meta("engine.0-of-1", b"{}")
        assert await read_entries(kv) == {}
        assert await read_entries(kv, "meta.") == {"engine.0-of-1": b"{}"}
