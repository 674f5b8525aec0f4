"""Web console test helpers: triggers, dead letters and engine summaries put on a real NATS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client

from flarebus import bus
from flarebus.events import ActionRef, Trigger, encoder
from flarebus.summary import (
    SUMMARY_KEYS,
    EngineSummary,
    RuleInfo,
    SeriesInfo,
    summary_encoder,
)


def make_trigger(rule: str = "cpu_high", state: str = "firing", *, host: str = "web-1",
                 annotations: dict[str, str] | None = None,
                 actions: list[ActionRef] | None = None, at: float | None = None,
                 metric: str = "cpu.usage") -> Trigger:
    now = time.time() if at is None else at
    return Trigger(id=f"{rule}-{host}-{state}-{now}", rule=rule, state=state,  # type: ignore[arg-type]
                   severity="critical", metric_name=metric, value=97.5, threshold="> 90",
                   duration=30.0, labels={"host": host}, annotations=annotations or {},
                   active_since=now - 30, at=now, actions=actions or [])


async def publish_trigger(nc: Client, trigger: Trigger) -> int:
    """The trigger on ``triggers.<rule>``, as an engine publishes it; its stream sequence."""
    js = await bus.ensure_jetstream(nc)
    ack = await js.publish(bus.trigger_subject(trigger.rule), encoder.encode(trigger),
                           headers={bus.MSG_ID_HEADER: trigger.id})
    return ack.seq


async def publish_dead_letter(nc: Client, trigger: Trigger, plugin: str = "http",
                              error: str = "connection refused") -> int:
    """The trigger dead-lettered, with the headers a worker gives it; its stream sequence."""
    js = await bus.ensure_jetstream(nc)
    ack = await js.publish(bus.dead_letter_subject(trigger.rule), encoder.encode(trigger),
                           headers={"Flarebus-Plugin": plugin, "Flarebus-Error":
                                    f"{plugin}: {error}", "Flarebus-Tries": "5",
                                    bus.MSG_ID_HEADER: f"{trigger.id}:dead"})
    return ack.seq


def summary(shard: str, states: list[SeriesInfo], rules: list[RuleInfo],
            updated_at: float | None = None) -> EngineSummary:
    now = time.time() if updated_at is None else updated_at
    return EngineSummary(
        shard=shard, host="test-host", pid=1, started_at=now - 60, updated_at=now,
        rule_files=["rules/test.yaml"], rules=rules, series=len(states) * 3,
        pending=sum(s.state == "pending" for s in states),
        firing=sum(s.state == "firing" for s in states), states=states)


async def put_summary(nc: Client, key: str, value: EngineSummary) -> None:
    """An engine's summary in the state bucket, under ``meta.engine.<key>``."""
    kv = await bus.engine_state_bucket(nc.jetstream())
    await kv.put(SUMMARY_KEYS + key, summary_encoder.encode(value))


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0,
                     what: str = "the condition") -> Any:
    """``check()``'s first truthy result, polled; fails after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s (last: {last!r})")
