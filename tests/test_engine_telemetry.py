"""Traces follow a sample from its publisher through the engine to the trigger on JetStream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client
from opentelemetry import trace

from flarebus.config import Config, EngineSettings, NatsSettings
from flarebus.engine.service.engine import Engine
from flarebus.publish import Publisher
from tests.support import collect, span_exporter

RULE = """\
rules:
  - name: traced-cpu
    metric: traced.cpu
    when: "> 80"
    for: 0s
"""



async def test_publish_evaluate_and_trigger_share_one_trace(nc: Client, nats_url: str,
                                                            tmp_path: Path) -> None:
    """The engine's evaluate and publish spans, and the trigger's headers, carry the
    publisher's trace id; the publish span is a child of the evaluate span."""
    exporter = span_exporter()
    rules = tmp_path / "traced.yaml"
    rules.write_text(RULE)
    config = Config(nats=NatsSettings(servers=[nats_url], name="telemetry-test"),
                    engine=EngineSettings(checkpoint_interval=60.0))
    engine = Engine(config, [str(rules)])
    await engine.start()
    try:
        got = await collect(nc, "triggers.traced-cpu")  # JetStream publishes reach core subscribers
        tracer = trace.get_tracer("test-publisher")
        with tracer.start_as_current_span("user-program") as root:
            async with Publisher(nc, batch=False) as pub:
                await pub.sample("traced.cpu", 93.5, host="web-1")
        trace_id = root.get_span_context().trace_id
        [msg] = await got.wait_for(1, timeout=15)
        assert msg.headers is not None and f"{trace_id:032x}" in msg.headers["traceparent"]
        for _ in range(100):
            if any(s.name.startswith("publish triggers.") for s in exporter.get_finished_spans()):
                break
            await asyncio.sleep(0.05)
    finally:
        await engine.stop()
    spans = exporter.get_finished_spans()
    [evaluate] = [s for s in spans if s.name == "evaluate"]
    [publish] = [s for s in spans if s.name == "publish triggers.traced-cpu"]
    assert evaluate.context.trace_id == trace_id
    assert publish.context.trace_id == trace_id
    assert publish.parent is not None and publish.parent.span_id == evaluate.context.span_id
    assert evaluate.attributes["flarebus.triggers"] == 1
