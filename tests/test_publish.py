"""Publishing samples with the Python API and `flarebus publish`, seen by a plain subscriber."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client

from flarebus.errors import SampleError
from flarebus.events import MetricSample, decode_metrics
from flarebus.publish import Publisher
from tests.support import collect, lines, run_flarebus


def received(collector_messages: list) -> list[MetricSample]:  # type: ignore[type-arg]
    return [s for m in collector_messages for s in decode_metrics(m.data)]


class TestPublisherApi:
    """The Publisher user programs call."""

    async def test_single_sample_round_trip(self, nc: Client) -> None:
        """One sample arrives on metrics.<name> as one object with the values sent."""
        got = await collect(nc, "metrics.api.single")
        pub = Publisher(nc, batch=False)
        await pub.sample("api.single", 93.5, 1763762400.25, host="web-1")
        await pub.close()
        (msg,) = await got.wait_for(1)
        assert msg.subject == "metrics.api.single"
        assert json.loads(msg.data) == {"name": "api.single", "value": 93.5,
                                        "ts": 1763762400.25, "labels": {"host": "web-1"}}

    async def test_many_samples_are_batched_per_subject(self, nc: Client) -> None:
        """250 samples over two names arrive as a few array messages, none lost, order kept."""
        got_a = await collect(nc, "metrics.batch.a")
        got_b = await collect(nc, "metrics.batch.b")
        async with Publisher(nc, max_batch=100) as pub:
            for i in range(250):
                await pub.sample("batch.a" if i % 2 else "batch.b", i, float(i))
        await asyncio.sleep(0.2)
        a, b = received(got_a.messages), received(got_b.messages)
        assert [s.value for s in a] == [float(i) for i in range(1, 250, 2)]
        assert [s.value for s in b] == [float(i) for i in range(0, 250, 2)]
        assert len(got_a.messages) + len(got_b.messages) <= 4
        assert pub.published_samples == 250

    async def test_linger_flushes_without_close(self, nc: Client) -> None:
        """A lone batched sample goes out after the linger time, without flush() or close()."""
        got = await collect(nc, "metrics.linger")
        pub = Publisher(nc, linger=0.01)
        await pub.sample("linger", 1.0)
        (msg,) = await got.wait_for(1, timeout=5)
        assert decode_metrics(msg.data)[0].value == 1.0

    async def test_size_bound_splits_batches(self, nc: Client) -> None:
        """Batches never exceed max_bytes: big label values split a batch into several messages."""
        got = await collect(nc, "metrics.big")
        async with Publisher(nc, max_bytes=4096) as pub:
            for i in range(40):
                await pub.sample("big", i, 1.0, blob="x" * 500)
        await asyncio.sleep(0.2)
        assert all(len(m.data) <= 4096 for m in got.messages)
        assert len(received(got.messages)) == 40 and len(got.messages) >= 5

    async def test_timestamp_is_stamped(self, nc: Client) -> None:
        """A sample sent without ts gets the publisher's clock, so event time is send time."""
        got = await collect(nc, "metrics.stamped")
        async with Publisher(nc) as pub:
            await pub.sample("stamped", 1)
        (msg,) = await got.wait_for(1)
        assert decode_metrics(msg.data)[0].ts is not None

    async def test_stale_sends_a_marker_after_the_samples(self, nc: Client) -> None:
        """stale(name, **labels) goes out after that series' samples: stale true, stamped."""
        got = await collect(nc, "metrics.api.ended")
        async with Publisher(nc) as pub:
            await pub.sample("api.ended", 5.0, 10.0, host="web-1")
            await pub.stale("api.ended", host="web-1")
            await pub.stale("api.ended", 20.0)
        samples = received(await got.wait_for(1))
        assert [(s.value, s.stale, s.labels) for s in samples] == [
            (5.0, False, {"host": "web-1"}), (0.0, True, {"host": "web-1"}), (0.0, True, {})]
        assert samples[1].ts is not None and samples[1].ts > 10.0 and samples[2].ts == 20.0

    @pytest.mark.parametrize(("name", "ts", "labels", "field"), [
        ("cpu usage", None, {}, "name"),
        ("cpu.usage", -1.0, {}, "ts"),
        ("cpu.usage", None, {"host": 3}, "labels.host"),
    ])
    async def test_bad_markers_are_refused(self, nc: Client, name: str, ts: float | None,
                                           labels: dict[str, object], field: str) -> None:
        """A marker with a bad name, ts or label raises SampleError naming the field."""
        pub = Publisher(nc, batch=False)
        with pytest.raises(SampleError, match=f"^{field.replace('.', '[.]')}"):
            await pub.stale(name, ts, **labels)  # type: ignore[arg-type]

    @pytest.mark.parametrize(("name", "value", "labels", "field"), [
        ("cpu usage", 1.0, {}, "name"),
        ("cpu.>", 1.0, {}, "name"),
        ("cpu.usage", float("nan"), {}, "value"),
        ("cpu.usage", "high", {}, "value"),
        ("cpu.usage", 1.0, {"host": 3}, "labels.host"),
    ])
    async def test_bad_samples_are_refused(self, nc: Client, name: str, value: object,
                                           labels: dict[str, object], field: str) -> None:
        """Invalid names, values and labels raise SampleError naming the field; nothing is sent."""
        got = await collect(nc, "metrics.>")
        pub = Publisher(nc, batch=False)
        with pytest.raises(SampleError, match=field.replace(".", r"\.")):
            await pub.sample(name, value, None, **labels)  # type: ignore[arg-type]
        await nc.flush()
        await asyncio.sleep(0.05)
        assert got.messages == []


class TestPublishCommand:
    """`flarebus publish` against the session's server."""

    @pytest.mark.parametrize(("name", "what", "expected"), [
        ("cli.one", ["93.5"], {}),
        ("cli.ended", ["--stale"], {"value": 0.0, "stale": True}),  # a staleness marker
    ])
    async def test_one_sample_from_arguments(self, nc: Client, nats_url: str, name: str,
                                             what: list[str], expected: dict[str, object]
                                             ) -> None:
        """NAME VALUE (or --stale) -l k=v --ts T reaches a subscriber with exactly those values."""
        got = await collect(nc, f"metrics.{name}")
        result = await asyncio.to_thread(run_flarebus, "publish", name, *what, "-l",
                                         "host=web-1", "--ts", "1763762400.25", "--nats", nats_url)
        assert result.returncode == 0, result.stderr
        (msg,) = await got.wait_for(1)
        assert json.loads(msg.data) == {"name": name, "value": 93.5, "ts": 1763762400.25,
                                        "labels": {"host": "web-1"}, **expected}

    async def test_json_lines_from_stdin(self, nc: Client, nats_url: str) -> None:
        """`publish -` sends every line, batched, in order."""
        got = await collect(nc, "metrics.cli.lines")
        text = lines(*(json.dumps({"name": "cli.lines", "value": i, "labels": {"i": str(i)}})
                       for i in range(300)))
        result = await asyncio.to_thread(run_flarebus, "publish", "-", "--nats", nats_url,
                                         input=text)
        assert result.returncode == 0, result.stderr
        await asyncio.sleep(0.3)
        samples = received(got.messages)
        assert [s.value for s in samples] == [float(i) for i in range(300)]
        assert len(got.messages) < 300

    @pytest.mark.parametrize(("text", "expected"), [
        ('{"name": "cli.bad", "value": 1}\n{"name": "cli.bad", "value": 2\n',
         "<stdin>:2: not valid JSON"),
        ('{"name": "cli.bad", "value": "x"}\n', "<stdin>:1: value: Expected `float`"),
        ('{"name": "cli bad", "value": 1}\n', "<stdin>:1: name:"),
        ('{"name": "cli.bad", "value": 1, "labels": {"1x": "a"}}\n', "<stdin>:1: labels:"),
        ('{"name": "cli.bad", "value": 1}\n{"value": 1}\n',
         "<stdin>:2: Object missing required field `name`"),
    ])
    async def test_bad_lines_name_the_line_and_send_nothing(self, nc: Client, nats_url: str,
                                                            text: str, expected: str) -> None:
        """A bad line exits 1, names its line and field, and its chunk is not published."""
        got = await collect(nc, "metrics.>")
        result = await asyncio.to_thread(run_flarebus, "publish", "-", "--nats", nats_url,
                                         input=text)
        assert result.returncode == 1
        assert expected in result.stderr
        await asyncio.sleep(0.2)
        assert got.messages == []

    @pytest.mark.parametrize(("args", "expected"), [
        (["cpu usage", "1"], "name:"),
        (["cpu.usage", "abc"], "value:"),
        (["cpu.usage", "nan"], "value"),
    ])
    def test_bad_arguments_exit_1_without_connecting(self, args: list[str], expected: str) -> None:
        """A bad NAME or VALUE is reported before any connection is tried (no server needed)."""
        result = run_flarebus("publish", *args, "--nats", "nats://127.0.0.1:1")
        assert result.returncode == 1
        assert expected in result.stderr

    @pytest.mark.parametrize(("args", "expected"), [
        (["cpu.usage", "1", "-l", "host"], "argument -l/--label: 'host': use KEY=VALUE"),
        (["cpu.usage", "1", "-l", "bad-key=x"], "'bad-key' is not a label name"),
        (["cpu.usage", "1", "--ts", "yesterday"], "argument --ts: 'yesterday' is not Unix"),
        (["cpu.usage"], "error: VALUE is missing"),
        (["cpu.usage", "1", "--stale"], "error: --stale takes no VALUE"),
        (["-", "--stale"], "error: --stale is for one series"),
    ])
    def test_bad_flags_are_usage_errors(self, args: list[str], expected: str) -> None:
        """A bad flag or a missing VALUE exits 2 with the usage line and argparse's message."""
        result = run_flarebus("publish", *args, "--nats", "nats://127.0.0.1:1")
        assert result.returncode == 2
        assert result.stderr.startswith("usage: flarebus publish")
        assert expected in result.stderr

    def test_help_teaches(self) -> None:
        """--help shows the forms of the command with examples."""
        result = run_flarebus("publish", "--help")
        assert result.returncode == 0
        assert "flarebus publish cpu.usage 93.5 -l host=web-1" in result.stdout
        assert "--nats" in result.stdout and "--creds" in result.stdout
