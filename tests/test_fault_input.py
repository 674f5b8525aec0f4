"""Fault suite: a hostile burst of 10k malformed messages against a real engine process."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flarebus import bus
from flarebus.bus import REASON_HEADER
from flarebus.engine.service.invalid import (
    INVALID_SAMPLE,
    LABEL_TOO_LONG,
    MALFORMED_JSON,
    SUBJECT_MISMATCH,
    TOO_MANY_LABELS,
    TRUNCATED_HEADER,
)
from tests.engine_support import wait_summary, wait_triggers
from tests.fault_support import engine_on_own_server, rss_kib
from tests.support import collect
from tests.test_engine import rule, rule_file, send
from tests.test_ingest import MALFORMED

ONE_MB = 1_048_576 - 64  # as large as the default max_payload lets a client send
#: Every hostile kind of issue 15 beyond the small MALFORMED ones: (subject tail, payload,
#: reason, how many of the burst).
HOSTILE: list[tuple[str, bytes, str, int]] = [
    ("cpu.usage", b'{"name": "cpu.usage", "value": NaN}', MALFORMED_JSON, 500),
    ("cpu.usage", b'{"name": "cpu.usage", "value": Infinity}', MALFORMED_JSON, 500),
    ("cpu.usage", b'{"name": "cpu.usage", "value": 1e999}', INVALID_SAMPLE, 500),
    ("cpu.usage", b'{"name": "cpu.usage", "value": 1, "ts": 1e999}', INVALID_SAMPLE, 500),
    ("cpu.usage", b"[" * 10_000 + b"]" * 10_000, INVALID_SAMPLE, 300),
    ("cpu.usage", b'{"name": "cpu.usage", "value": 1, "labels": {"a": "\xff\xfe"}}',
     MALFORMED_JSON, 500),
    ("cpu.usage", b"\xc3\x28\xa0\xa1", MALFORMED_JSON, 500),
    ("cpu.usage", b'{"name": "cpu.usage", "value": 1, "labels": {"a": {"b": [1, 2]}}}',
     INVALID_SAMPLE, 500),
    ("cpu.usage", b'{"name": "disk.free", "value": 1}', SUBJECT_MISMATCH, 500),
    ("cpu.usage", json.dumps({"name": "cpu.usage", "value": 1, "labels": {
        f"l{i}": "v" for i in range(10_000)}}).encode(), TOO_MANY_LABELS, 100),
    ("cpu.usage", json.dumps({"name": "cpu.usage", "value": 1, "labels": {
        "host": "h" * 5000}}).encode(), LABEL_TOO_LONG, 200),
    ("cpu.usage", b'"' + b"x" * ONE_MB + b'"', INVALID_SAMPLE, 10),
    ("cpu.usage", b"{" + b" " * ONE_MB, MALFORMED_JSON, 10),
]


def burst() -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """10,000 messages: the HOSTILE counts, MALFORMED (and stacks) for the rest."""
    msgs: list[tuple[str, bytes]] = []
    expected: dict[str, int] = {}
    for tail, data, reason, count in HOSTILE:
        msgs += [(f"metrics.{tail}", data)] * count
        expected[reason] = expected.get(reason, 0) + count
    msgs += [("stacks.api", b'{"source": "api", "stacks": [{"frames": []}]}')] * 200
    expected[INVALID_SAMPLE] += 200
    i = 0
    while len(msgs) < 10_000:
        tail, text, reason = MALFORMED[i % len(MALFORMED)]
        msgs.append((f"metrics.{tail}", text.encode()))
        expected[reason] = expected.get(reason, 0) + 1
        i += 1
    return msgs, expected


class TestHostileBurst:
    """10k hostile messages: the engine lives, reports each one, and its memory stays bounded."""

    async def test_every_kind_reported_memory_bounded_status_written(
            self, tmp_path: Path) -> None:
        """Engine alive; 100% on flarebus.invalid with reasons; RSS bounded; status written."""
        rules = rule_file(tmp_path / "r.yaml", rule("hostile-alive", "hostile.alive"))
        async with engine_on_own_server(tmp_path, rules) as (engine, nc, _):
            assert engine.proc is not None
            invalid = await collect(nc, bus.INVALID_SUBJECT)
            msgs, expected = burst()
            rss: list[int] = [rss_kib(engine.proc.pid)]
            for round_ in range(2):  # the second round shows whether memory keeps growing
                for subject, data in msgs:
                    await nc.publish(subject, data)
                await nc.flush()
                await invalid.wait_for(10_000 * (round_ + 1), timeout=120)
                rss.append(rss_kib(engine.proc.pid))
            reasons: dict[str, int] = {}
            for m in invalid.messages:
                reason = m.headers[REASON_HEADER].split(":")[0]
                reasons[reason] = reasons.get(reason, 0) + 1
            assert reasons == {k: 2 * v for k, v in expected.items()}, reasons
            cut = sum(TRUNCATED_HEADER in m.headers for m in invalid.messages)
            assert cut == 2 * 20, f"{cut} of the 40 1 MB messages republished cut to fit"
            assert engine.proc.poll() is None, "the engine died"
            began = time.time()
            await send(nc, "hostile.alive", 99)
            await wait_triggers(nc, "triggers.hostile-alive", 1, timeout=30)
            summary = await wait_summary(nc, lambda s: s.updated_at > began)
            assert summary.stats["rejected"] == {k: 2 * v for k, v in expected.items()}
            growth = rss[2] - rss[1]
            assert growth < 32 * 1024, f"RSS KiB start/after 1st/after 2nd burst: {rss}"
            assert rss[2] - rss[0] < 200 * 1024, f"RSS KiB start/after 1st/after 2nd: {rss}"
            failed = [x for x in engine.lines if "failed" in x or "Traceback" in x]
            assert not failed, failed
            print(f"engine RSS KiB: start {rss[0]}, after 10k {rss[1]}, after 20k {rss[2]}")
