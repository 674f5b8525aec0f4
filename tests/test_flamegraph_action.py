"""The flamegraph action: a firing rule comes with the flamegraph of its source."""

from __future__ import annotations

import asyncio
import logging
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus.actions.builtins.flamegraph import FlamegraphAction, FlamegraphConfig
from flarebus.errors import ActionError
from flarebus.events import Stack, StackSample, Trigger, encoder
from flarebus.samplers.exporters import parse_folded
from tests.support import collect


def _trigger(state: str = "firing", **labels: str) -> Trigger:
    now = time.time()
    return Trigger(id=f"t-{state}-{now}", rule="db-hotspot", state=state,  # type: ignore[arg-type]
                   severity="warning", metric_name="stacks.fgapi", value=0.9,
                   threshold="> 0.3", duration=60.0, labels=labels, annotations={},
                   active_since=now - 60, at=now, actions=[])


async def _action(nc: Client, **config: object) -> FlamegraphAction:
    action = FlamegraphAction()
    action.use_nats(nc)
    await action.init(FlamegraphConfig(**config))  # type: ignore[arg-type]
    action.validate_config()
    return action


async def _publish_hot(nc: Client) -> None:
    sample = StackSample("fgapi", [Stack(["main", "db.query"], 30), Stack(["main", "idle"], 3)],
                         time.time())
    await nc.publish("stacks.fgapi", encoder.encode(sample))
    await nc.flush()


async def test_firing_writes_a_flamegraph_file_and_logs_where(
        nc: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The SVG of the last N seconds is written and its path is in the log line."""
    action = await _action(nc, dir=str(tmp_path), format="svg", seconds=30)
    try:
        await _publish_hot(nc)
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.INFO, logger="flarebus.actions.flamegraph"):
            await action.execute(_trigger())
    finally:
        await action.close()
    files = list(tmp_path.glob("db-hotspot_fgapi_*.svg"))
    assert len(files) == 1
    root = ET.fromstring(files[0].read_bytes())
    assert any(g.get("data-n") == "db.query" for g in root.iter())
    assert any(str(files[0]) in r.message for r in caplog.records)


async def test_flamegraph_can_go_to_a_subject(nc: Client) -> None:
    """With subject, the folded graph is published there instead of written."""
    box = await collect(nc, "flamegraphs.db-hotspot")
    action = await _action(nc, format="folded", subject="flamegraphs.{rule}", source="fgapi")
    try:
        await _publish_hot(nc)
        await asyncio.sleep(0.1)
        await action.execute(_trigger())
        msg = (await box.wait_for(1))[0]
    finally:
        await action.close()
    tree = parse_folded(msg.data.decode())
    assert tree.children["main"].children["db.query"].value >= 30


async def test_no_source_and_no_stacks_are_errors(nc: Client) -> None:
    """A trigger naming no stack source fails permanently; no stacks yet is a retryable error."""
    action = await _action(nc, wait=0.1)
    try:
        bad = _trigger()
        bad.metric_name = "cpu.usage"
        with pytest.raises(ActionError, match="no stack source") as info:
            await action.execute(bad)
        assert info.value.permanent
        empty = _trigger()
        empty.metric_name = "stacks.silent"
        with pytest.raises(ActionError, match="no stacks from 'silent'"):
            await action.execute(empty)
        await action.execute(_trigger(state="resolved"))  # skipped, not an error
    finally:
        await action.close()
