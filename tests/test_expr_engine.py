"""expr rules in a real `flarebus engine` on a real nats-server: alerts and recording rules."""

from __future__ import annotations

import json
import time
from pathlib import Path

from nats.aio.client import Client

from flarebus.publish import Publisher
from tests.engine_support import EngineProcess, wait_summary, wait_triggers
from tests.support import collect

RULES = """\
rules:
  - name: e2e-error-ratio
    expr: sum by (service) (e2e.errors) / sum by (service) (e2e.requests)
    when: "> 0.05"
    actions: [log]
  - name: e2e-ratio-record
    record: e2e.service.error_ratio
    expr: sum by (service) (e2e.errors) / sum by (service) (e2e.requests)
"""


async def test_an_expr_rule_fires_and_a_recording_rule_publishes(nc: Client, nats_url: str,
                                                                 tmp_path: Path) -> None:
    """One scrape's samples in one message: the ratio fires once; the record is published."""
    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    recorded = await collect(nc, "metrics.e2e.service.error_ratio")
    engine = EngineProcess(nats_url, [tmp_path / "r.yaml"]).start()
    try:
        publisher = Publisher(nc)
        ts = time.time()
        for host, errors, requests in (("a", 10.0, 100.0), ("b", 2.0, 20.0)):
            await publisher.sample("e2e.errors", errors, ts, service="api", host=host)
            await publisher.sample("e2e.requests", requests, ts, service="api", host=host)
        await publisher.close()
        got = await wait_triggers(nc, "triggers.e2e-error-ratio", 1)
        assert [(t.state, t.labels, round(t.value, 6)) for t in got] == [
            ("firing", {"service": "api"}, round(12 / 120, 6))]
        messages = await recorded.wait_for(1)
        body = json.loads(messages[0].data)
        sample = body[0] if isinstance(body, list) else body
        assert (sample["name"], sample["labels"], sample["ts"]) == (
            "e2e.service.error_ratio", {"service": "api"}, ts)
        assert abs(sample["value"] - 0.1) < 1e-9
        summary = await wait_summary(nc, lambda s: {r.name for r in s.rules} >= {
            "e2e-error-ratio", "e2e-ratio-record"})  # a recording rule has no `when`
        assert summary.series >= 1, summary
    finally:
        engine.stop()
