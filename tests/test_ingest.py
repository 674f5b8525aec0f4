"""Engine input: batched decoding, rejection of bad input to flarebus.invalid, slow consumers."""

from __future__ import annotations

import asyncio
import json

from nats.aio.client import Client
from nats.aio.msg import Msg

from flarebus.bus import REASON_HEADER
from flarebus.engine.service.decoding import Segment, decode_metric_batch, decode_stack_batch
from flarebus.engine.service.ingest import Ingest, turns
from flarebus.engine.service.invalid import (
    EMPTY_BATCH,
    INVALID_SAMPLE,
    LABEL_TOO_LONG,
    MALFORMED_JSON,
    SUBJECT_HEADER,
    SUBJECT_MISMATCH,
    TOO_LARGE,
    TOO_MANY_LABELS,
    TRUNCATED_HEADER,
    InvalidSink,
    fit_payload,
)
from flarebus.engine.service.metrics import EngineStats
from flarebus.events import StackSample, WireSample, encoder
from flarebus.ingest_settings import InputLimits
from tests.support import collect


def msg(subject: str, data: bytes | str, headers: dict[str, str] | None = None) -> Msg:
    raw = data.encode() if isinstance(data, str) else data
    return Msg(_client=None, subject=subject, data=raw, headers=headers)  # type: ignore[arg-type]


SAMPLE = '{"name": "cpu.usage", "value": 93.5, "ts": 10.0, "labels": {"host": "a"}}'
#: one malformed message of every kind the engine rejects, with the reason it must give
MALFORMED: list[tuple[str, str, str]] = [
    ("cpu.usage", "not json", MALFORMED_JSON),
    ("cpu.usage", '{"name": "cpu.usage", "value": ', MALFORMED_JSON),
    ("cpu.usage", "", MALFORMED_JSON),
    ("cpu.usage", '{"name": "cpu.usage", "value": "high"}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu.usage"}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu.usage", "value": 1, "extra": 2}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu.usage", "value": 1, "ts": -5}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu.usage", "value": 1, "labels": {"host": 3}}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu.usage", "value": 1, "labels": {"1bad": "x"}}', INVALID_SAMPLE),
    ("cpu.usage", '{"name": "cpu usage", "value": 1}', INVALID_SAMPLE),
    ("cpu.usage", '[{"name": "cpu.usage", "value": 1}, 7]', INVALID_SAMPLE),
    ("cpu.usage", "42", INVALID_SAMPLE),
    ("cpu.usage", '{"name": "mem.used", "value": 1}', SUBJECT_MISMATCH),
    ("cpu.usage", '[{"name": "cpu.usage", "value": 1}, {"name": "x", "value": 2}]',
     SUBJECT_MISMATCH),
    ("cpu.usage", "[]", EMPTY_BATCH),
]


class TestDecodeBatch:
    """decode_metric_batch / decode_stack_batch: what is accepted, what is rejected and why."""

    def test_singles_and_batches_merge_into_one_segment_in_order(self) -> None:
        """Untraced single samples and arrays become one segment, arrival order kept."""
        batch = json.dumps([{"name": "cpu.usage", "value": v} for v in (1, 2)])
        decoded = decode_metric_batch([msg("metrics.cpu.usage", SAMPLE),
                                       msg("metrics.cpu.usage", batch)], len("metrics."))
        assert decoded.rejected == []
        assert decoded.samples == 3
        (segment,) = decoded.segments
        assert [s.value for s in segment.samples] == [93.5, 1.0, 2.0]
        assert isinstance(segment.samples[0], WireSample)

    def test_every_malformed_kind_is_rejected_with_its_reason(self) -> None:
        """Each malformed message is rejected once, with the expected reason; the good ones pass."""
        msgs = [msg(f"metrics.{tail}", data) for tail, data, _ in MALFORMED]
        msgs.insert(3, msg("metrics.cpu.usage", SAMPLE))
        decoded = decode_metric_batch(msgs, len("metrics."))
        assert [r.reason for r in decoded.rejected] == [reason for _, _, reason in MALFORMED]
        assert decoded.samples == 1
        assert all(r.detail for r in decoded.rejected)

    def test_traced_message_gets_its_own_segment(self) -> None:
        """With tracing on, a message with a traceparent is evaluated on its own, headers kept."""
        tp = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        msgs = [msg("metrics.cpu.usage", SAMPLE), msg("metrics.cpu.usage", SAMPLE, tp),
                msg("metrics.cpu.usage", SAMPLE), msg("metrics.cpu.usage", SAMPLE)]
        traced = decode_metric_batch(msgs, len("metrics."), traced=True).segments
        assert [(len(s.samples), s.headers) for s in traced] == [(1, None), (1, tp), (2, None)]
        untraced = decode_metric_batch(msgs, len("metrics."), traced=False).segments
        assert [len(s.samples) for s in untraced] == [4]

    def test_stack_samples_match_their_source(self) -> None:
        """stacks.<source> carries StackSamples; a source other than the subject's is rejected."""
        good = '{"source": "api", "stacks": [{"frames": ["main", "db"], "weight": 2}]}'
        bad = '{"source": "web", "stacks": [{"frames": ["main"]}]}'
        decoded = decode_stack_batch([msg("stacks.api", good), msg("stacks.api", bad)],
                                     len("stacks."))
        assert isinstance(decoded.segments[0].samples[0], StackSample)
        assert [r.reason for r in decoded.rejected] == [SUBJECT_MISMATCH]


class TestTurns:
    """A large batch is evaluated in turns, so other tasks run in between."""

    def test_cut_in_order_with_headers_kept(self) -> None:
        """Runs of at most the limit, every sample once in order, a long segment split."""
        traced = {"traceparent": "00-x"}
        segments = [Segment(list(range(7))), Segment([7, 8, 9], traced),
                    Segment(list(range(10, 22)))]
        cut = list(turns(segments, 5))
        assert [sum(len(s.samples) for s in turn) for turn in cut] == [5, 5, 5, 5, 2]
        assert [x for turn in cut for s in turn for x in s.samples] == list(range(22))
        assert [s.headers for turn in cut for s in turn if 8 in s.samples] == [traced]


class Received:
    """What an Ingest handed to its handlers."""

    def __init__(self) -> None:
        self.metrics: list[WireSample] = []
        self.stacks: list[StackSample] = []
        self.calls = 0

    def on_metrics(self, segments: list[Segment[WireSample]]) -> None:
        self.calls += 1
        self.metrics.extend(s for seg in segments for s in seg.samples)

    def on_stacks(self, segments: list[Segment[StackSample]]) -> None:
        self.stacks.extend(s for seg in segments for s in seg.samples)


async def started_ingest(nc: Client, prefix: str, **options: object) -> tuple[
        Ingest, Received, EngineStats, asyncio.Task[None]]:
    stats = EngineStats()
    got = Received()
    ingest = Ingest(nc, stats, InvalidSink(nc, stats, subject=f"{prefix}.invalid"),
                    on_metrics=got.on_metrics, on_stacks=got.on_stacks,
                    metrics_prefix=f"{prefix}m", stacks_prefix=f"{prefix}s",
                    **options)  # type: ignore[arg-type]
    await ingest.start()
    return ingest, got, stats, asyncio.create_task(ingest.run())


class TestIngestLive:
    """Ingest on the real server: batching, rejection, graceful stop."""

    async def test_samples_arrive_in_batches_and_nothing_is_lost(self, nc: Client) -> None:
        """5000 single-sample messages reach the handler complete, in far fewer calls."""
        ingest, got, stats, task = await started_ingest(nc, "ingest1")
        for i in range(5000):
            await nc.publish("ingest1m.cpu.usage",
                             b'{"name":"cpu.usage","value":%d}' % i)
        await nc.flush()
        for _ in range(200):
            if len(got.metrics) == 5000:
                break
            await asyncio.sleep(0.02)
        await ingest.stop()
        await task
        assert [s.value for s in got.metrics] == [float(i) for i in range(5000)]
        assert got.calls < 5000
        assert stats.samples_received == 5000 and stats.messages_received == 5000

    async def test_10k_malformed_messages_are_counted_and_republished(self, nc: Client) -> None:
        """10k bad messages of every kind: each counted by reason and on the invalid subject."""
        invalid = await collect(nc, "ingest2.invalid")
        ingest, got, stats, task = await started_ingest(nc, "ingest2")
        expected: dict[str, int] = {}
        for i in range(10_000):
            tail, data, reason = MALFORMED[i % len(MALFORMED)]
            await nc.publish(f"ingest2m.{tail}", data.encode())
            expected[reason] = expected.get(reason, 0) + 1
        await nc.publish("ingest2m.cpu.usage", SAMPLE.encode())
        await nc.flush()
        await invalid.wait_for(10_000, timeout=30)
        await ingest.stop()
        await task
        assert dict(stats.rejected) == expected
        assert len(got.metrics) == 1
        reasons = [m.headers[REASON_HEADER].split(":")[0] for m in invalid.messages]
        assert sorted(reasons) == sorted(r for r, n in expected.items() for _ in range(n))
        first = invalid.messages[0]
        assert first.headers[SUBJECT_HEADER] == f"ingest2m.{MALFORMED[0][0]}"
        assert first.data == MALFORMED[0][1].encode()

    async def test_stop_evaluates_what_already_arrived(self, nc: Client) -> None:
        """After stop() no new input is taken, and what was received is still handed over."""
        ingest, got, _, task = await started_ingest(nc, "ingest3")
        await nc.publish("ingest3s.api", b'{"source":"api","stacks":[{"frames":["main"]}]}')
        await nc.flush()
        for _ in range(100):
            if got.stacks:
                break
            await asyncio.sleep(0.02)
        await ingest.stop()
        await task
        await nc.publish("ingest3m.cpu.usage", SAMPLE.encode())
        await nc.flush()
        await asyncio.sleep(0.1)
        assert len(got.stacks) == 1 and got.metrics == []


class TestSlowConsumer:
    """Past the subscription's pending limits nats-py drops messages: the engine counts them."""

    async def test_drops_past_pending_limits_are_counted(self, nats_settings: object) -> None:
        """A stalled evaluator with tiny limits: drops counted, received + dropped = sent."""
        import time

        from flarebus import bus

        holder: dict[str, Ingest] = {}

        async def on_error(exc: Exception) -> None:
            from nats.errors import SlowConsumerError
            if isinstance(exc, SlowConsumerError):
                holder["ingest"].on_slow_consumer(exc.sub)

        client = await bus.connect(nats_settings, error_cb=on_error)  # type: ignore[arg-type]
        publisher = await bus.connect(nats_settings)  # type: ignore[arg-type]
        stats = EngineStats()
        got = Received()

        def stalled(segments: list[Segment[WireSample]]) -> None:
            got.on_metrics(segments)
            time.sleep(0.05)  # an evaluator that cannot keep up

        ingest = Ingest(client, stats, InvalidSink(client, stats, subject="ingest4.invalid"),
                        on_metrics=stalled, on_stacks=got.on_stacks, metrics_prefix="ingest4m",
                        stacks_prefix="ingest4s", pending_msgs_limit=20, max_batch=10)
        holder["ingest"] = ingest
        await ingest.start()
        task = asyncio.create_task(ingest.run())
        for i in range(2000):
            await publisher.publish("ingest4m.x", b'{"name":"x","value":%d}' % i)
        await publisher.flush()
        await client.flush()
        for _ in range(200):
            if len(got.metrics) + stats.dropped["slow_consumer"] >= 2000:
                break
            await asyncio.sleep(0.05)
        await ingest.stop()
        await task
        await publisher.close()
        await client.close()
        assert stats.dropped["slow_consumer"] > 0
        assert len(got.metrics) + stats.dropped["slow_consumer"] == 2000


def labelled(n: int, value: str = "v", *, name: str = "cpu.usage") -> str:
    """A sample of ``name`` with ``n`` labels, each holding ``value``."""
    return json.dumps({"name": name, "value": 1, "labels": {f"l{i}": value for i in range(n)}})


class TestBounds:
    """engine.limits: size, label count and label length, on metrics and stacks alike."""

    LIMITS = InputLimits(max_message_bytes=4096, max_labels=8, max_label_value_length=100)

    def test_each_limit_rejects_with_its_reason_and_within_passes(self) -> None:
        """Past each limit: its own reason and a detail naming the setting; at the limit: kept."""
        msgs = [msg("metrics.cpu.usage", "x" * 4097), msg("metrics.cpu.usage", labelled(9)),
                msg("metrics.cpu.usage", labelled(1, "v" * 101)),
                msg("metrics.cpu.usage", labelled(8, "v" * 100))]
        decoded = decode_metric_batch(msgs, len("metrics."), limits=self.LIMITS)
        assert [r.reason for r in decoded.rejected] == [TOO_LARGE, TOO_MANY_LABELS,
                                                        LABEL_TOO_LONG]
        details = [r.detail for r in decoded.rejected]
        assert "max_message_bytes (4096)" in details[0] and "9 labels" in details[1]
        assert "'l0' holds 101 characters" in details[2]
        assert decoded.samples == 1

    def test_a_long_batch_is_checked_sample_by_sample(self) -> None:
        """In an array, one sample past the label limit rejects the message, wherever it is."""
        batch = json.dumps([json.loads(labelled(1)) for _ in range(50)]
                           + [json.loads(labelled(9))])
        decoded = decode_metric_batch([msg("metrics.cpu.usage", batch)], len("metrics."),
                                      limits=self.LIMITS)
        assert [r.reason for r in decoded.rejected] == [TOO_MANY_LABELS]

    def test_an_invalid_sample_past_a_limit_is_invalid_first(self) -> None:
        """A negative ts beside a too-long label: INVALID_SAMPLE with msgspec's own message."""
        bad = json.dumps({"name": "cpu.usage", "value": 1, "labels": {"host": "h" * 101},
                          "ts": -1})
        decoded = decode_metric_batch([msg("metrics.cpu.usage", bad)], len("metrics."),
                                      limits=self.LIMITS)
        assert [r.reason for r in decoded.rejected] == [INVALID_SAMPLE]
        assert "`$.ts`" in decoded.rejected[0].detail

    def test_samples_within_the_limits_are_wire_samples(self) -> None:
        """What the limits-checking decoder returns is a WireSample, and encodes the same."""
        batch = json.dumps([json.loads(labelled(8, "v" * 100)) for _ in range(3)])
        decoded = decode_metric_batch([msg("metrics.cpu.usage", batch)], len("metrics."),
                                      limits=self.LIMITS)
        (segment,) = decoded.segments
        assert all(isinstance(s, WireSample) for s in segment.samples)
        assert json.loads(encoder.encode(segment.samples)) == json.loads(batch)

    def test_stack_samples_have_the_same_bounds(self) -> None:
        """Stack samples: too large, too many labels and too long a label are refused too."""
        def stack(labels: dict[str, str], pad: int = 0) -> str:
            return json.dumps({"source": "api", "stacks": [{"frames": ["m" * (pad + 1)]}],
                               "labels": labels})
        msgs = [msg("stacks.api", stack({}, 5000)),
                msg("stacks.api", stack({f"l{i}": "v" for i in range(9)})),
                msg("stacks.api", stack({"host": "h" * 101})), msg("stacks.api", stack({}))]
        decoded = decode_stack_batch(msgs, len("stacks."), limits=self.LIMITS)
        assert [r.reason for r in decoded.rejected] == [TOO_LARGE, TOO_MANY_LABELS,
                                                        LABEL_TOO_LONG]
        assert decoded.samples == 1

    def test_the_defaults_refuse_10k_labels(self) -> None:
        """The hostile sample of issue 15 (10,000 labels) is refused with the default limits."""
        decoded = decode_metric_batch([msg("metrics.cpu.usage", labelled(10_000))],
                                      len("metrics."))
        assert [r.reason for r in decoded.rejected] == [TOO_MANY_LABELS]


class TestRepublishFits:
    """A rejected message as large as the server allows is still republished, cut to fit."""

    def test_fit_payload_cuts_and_says_the_original_size(self) -> None:
        """Over max_payload with headers: cut, Flarebus-Truncated holds the original size."""
        headers = {REASON_HEADER: "malformed-json: ...", SUBJECT_HEADER: "metrics.x"}
        data = b"x" * 1_048_576
        cut = fit_payload(data, headers, 1_048_576)
        framing = sum(len(k) + len(v) + 4 for k, v in headers.items()) + 16
        assert 1_000_000 < len(cut) < 1_048_576 - framing and data.startswith(cut)
        assert headers[TRUNCATED_HEADER] == "1048576"
        small = {REASON_HEADER: "r"}
        assert fit_payload(b"abc", small, 1_048_576) == b"abc" and TRUNCATED_HEADER not in small

    async def test_a_1mb_rejected_message_reaches_flarebus_invalid(self, nc: Client) -> None:
        """A 1 MB malformed message: counted, and on the invalid subject (truncated)."""
        invalid = await collect(nc, "ingest5.invalid")
        ingest, _, stats, task = await started_ingest(nc, "ingest5")
        size = nc.max_payload - 200
        await nc.publish("ingest5m.cpu.usage", b"{" * size)
        await nc.flush()
        (got,) = await invalid.wait_for(1, timeout=15)
        await ingest.stop()
        await task
        assert got.headers[TRUNCATED_HEADER] == str(size)
        assert stats.rejected == {MALFORMED_JSON: 1}
