"""The prometheus sampler against a real HTTP server serving real exposition text."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from flarebus.errors import SampleError
from flarebus.events import MetricSample, decode_metrics
from flarebus.plugin import open_plugin
from flarebus.publish import Publisher
from flarebus.samplers.prometheus import PrometheusSampler, subject_safe
from flarebus.samplers.runtime import SamplerRunner
from tests.engine_support import EngineProcess, wait_triggers
from tests.http_support import LoopbackServer, ProxyServer
from tests.support import collect, run_flarebus

EXPOSITION = """\
# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{method="GET",path="/a \\"quoted\\"\\\\back\\nline"} {requests}
http_requests_total{method="POST",path="/b"} 7
# HELP queue_depth Items waiting.
# TYPE queue_depth gauge
queue_depth{queue="mail"} 12.5
queue_depth{queue="odd"} NaN
# HELP request_seconds Latency.
# TYPE request_seconds histogram
request_seconds_bucket{le="0.1"} 3
request_seconds_bucket{le="1"} 5
request_seconds_bucket{le="+Inf"} 6
request_seconds_sum 2.5
request_seconds_count 6
# TYPE job:errors:rate5m gauge
job:errors:rate5m{job="api"} 0.25
"""


def _answer(handler: BaseHTTPRequestHandler, status: int, text: str) -> None:
    """Send ``text`` as Prometheus text exposition with ``status``."""
    body = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Handler(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        if self.path == "/stall":
            time.sleep(3.0)
            return
        if self.path != "/metrics":
            self.send_error(404)
            return
        type(self).hits += 1
        _answer(self, 200, EXPOSITION.replace("{requests}", str(100 * type(self).hits)))

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[LoopbackServer]:
    """A real HTTP server on a free loopback port serving /metrics."""
    _Handler.hits = 0
    server = LoopbackServer(_Handler)
    yield server
    server.stop()


@pytest.fixture
def exporter_url(exporter: LoopbackServer) -> str:
    return f"{exporter.url}/metrics"


def _by_key(samples: list[MetricSample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "host"))): s.value
            for s in samples}


async def _scrape(nc: Client, sampler: PrometheusSampler, config: dict[str, object],
                  until: str) -> list[MetricSample]:
    """Run the sampler until a message on ``until`` arrived; every sample published by then."""
    everything = await collect(nc, "metrics.>")
    box = await collect(nc, until)
    runner = SamplerRunner(Publisher(nc))
    runner.add(sampler, config, interval=0.2)
    await runner.start()
    try:
        await box.wait_for(1)
    finally:
        await runner.stop()
    await nc.flush()
    return [s for m in everything.messages for s in decode_metrics(m.data)]


async def test_samples_arrive_with_names_values_and_labels(nc: Client, exporter_url: str) -> None:
    """Counters, gauges, histograms and escaped label values arrive as scraped."""
    sampler = PrometheusSampler()
    samples = await _scrape(nc, sampler, {"url": exporter_url, "prefix": "app"},
                            "metrics.app.request_seconds_count")
    got = _by_key(samples)
    escaped = '/a "quoted"\\back\nline'
    assert got[("app.http_requests_total", (("method", "GET"), ("path", escaped)))] == 100
    assert got[("app.http_requests_total", (("method", "POST"), ("path", "/b")))] == 7
    assert got[("app.queue_depth", (("queue", "mail"),))] == 12.5
    assert got[("app.request_seconds_bucket", (("le", "0.1"),))] == 3
    assert got[("app.request_seconds_bucket", (("le", "+Inf"),))] == 6
    assert got[("app.request_seconds_sum", ())] == 2.5
    assert got[("app.request_seconds_count", ())] == 6
    assert got[("app.job_errors_rate5m", (("job", "api"),))] == 0.25
    assert ("app.queue_depth", (("queue", "odd"),)) not in got  # NaN cannot travel
    assert sampler.skipped >= 1
    assert all(s.labels["host"] for s in samples)


async def test_counters_become_rates_when_configured(nc: Client, exporter_url: str) -> None:
    """With rates: true the second scrape publishes <name>.rate; gauges stay as they are."""
    sampler = PrometheusSampler()
    samples = await _scrape(nc, sampler, {"url": exporter_url, "rates": True},
                            "metrics.http_requests_total.rate")
    got = _by_key(samples)
    rates = [s for s in samples if s.name == "http_requests_total.rate"
             and s.labels.get("method") == "GET"]
    assert rates and rates[0].value > 0  # 100 more requests each scrape
    assert next(s for s in samples if s.name == "http_requests_total.rate"
            and s.labels.get("method") == "POST").value == 0
    assert got[("queue_depth", (("queue", "mail"),))] == 12.5
    assert not any(s.name == "http_requests_total" for s in samples)


async def test_scrapes_share_one_connection(exporter: LoopbackServer, exporter_url: str) -> None:
    """Successive scrapes of one sampler go over one kept-alive connection."""
    sampler = PrometheusSampler()
    await open_plugin(sampler, {"url": exporter_url})
    try:
        for _ in range(3):
            assert await sampler.collect()
    finally:
        await sampler.close()
    assert _Handler.hits == 3
    assert exporter.connections == 1


async def test_scrapes_go_through_the_proxy_from_the_environment(
        exporter_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY set: the scrape is relayed by the proxy."""
    proxy = ProxyServer()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    sampler = PrometheusSampler()
    await open_plugin(sampler, {"url": exporter_url})
    try:
        assert await sampler.collect()
    finally:
        await sampler.close()
        proxy.stop()
    assert proxy.relayed == [exporter_url]


async def test_a_slow_endpoint_is_a_sample_error(exporter_url: str) -> None:
    """No answer within timeout: SampleError saying so (the runtime backs off and retries)."""
    sampler = PrometheusSampler()
    await open_plugin(sampler, {"url": exporter_url.replace("/metrics", "/stall"),
                                 "timeout": 0.5})
    try:
        with pytest.raises(SampleError, match=r"no answer within 0\.5s"):
            await sampler.collect()
    finally:
        await sampler.close()


def test_metric_names_are_made_subject_safe() -> None:
    """Characters a subject token cannot hold become underscores."""
    assert subject_safe("job:errors:rate5m") == "job_errors_rate5m"
    assert subject_safe("node_cpu_seconds_total") == "node_cpu_seconds_total"


def test_the_cli_scrapes_and_publishes(nats_url: str, exporter_url: str) -> None:
    """`flarebus sample prometheus --url ... --once` publishes one scrape and exits 0."""
    result = run_flarebus("sample", "prometheus", "--url", exporter_url, "--once",
                          "--nats", nats_url, "-l", "env=test")
    assert result.returncode == 0, result.stderr
    assert "sample(s)" in result.stderr


def test_an_unreachable_endpoint_is_a_clear_error(exporter_url: str) -> None:
    """--once against a closed port fails with the reason, not a traceback."""
    result = run_flarebus("sample", "prometheus", "--url", "http://127.0.0.1:9/metrics",
                          "--once", "--print")
    assert result.returncode == 1
    assert "Connection refused" in result.stderr or "refused" in result.stderr.lower()
    assert "Traceback" not in result.stderr


class _Changing(BaseHTTPRequestHandler):
    """/metrics serves ``body`` with ``status``: a target whose series come and go."""

    body = ""
    status = 200

    def do_GET(self) -> None:
        _answer(self, type(self).status, type(self).body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def changing() -> Iterator[str]:
    """The URL of a real HTTP target serving whatever ``_Changing.body`` holds."""
    _Changing.body, _Changing.status = "", 200
    server = LoopbackServer(_Changing)
    yield f"{server.url}/metrics"
    server.stop()


def _stale(msgs: list[Msg]) -> list[MetricSample]:
    return [s for m in msgs for s in decode_metrics(m.data) if s.stale]


class TestStalenessMarkers:
    """A series gone from the target ends with a staleness marker, as in Prometheus."""

    async def test_a_vanished_series_gets_one_marker(self, changing: str) -> None:
        """Scrape a, b then only a: one marker for b; a NaN or an uncomputable rate is a gap."""
        sampler = PrometheusSampler()
        await open_plugin(sampler, {"url": changing, "rates": True})
        try:
            _Changing.body = "# TYPE c counter\nc 5\na 1\nb{k=\"v\"} 2\n"
            assert [(s.name, s.stale) for s in await sampler.collect()] == [
                ("a", False), ("b", False)]  # no rate of c yet: not a marker later either
            _Changing.body = "# TYPE c counter\nc 1\na NaN\n"  # c reset: no rate, still there
            assert [(s.name, s.labels, s.stale) for s in await sampler.collect()] == [
                ("b", {"k": "v"}, True)]
            _Changing.body = "a 3\n"
            assert [(s.name, s.stale) for s in await sampler.collect()] == [
                ("a", False), ("c_total.rate", True)]
        finally:
            await sampler.close()

    async def test_a_target_going_down_ends_every_series(self, nc: Client,
                                                         changing: str) -> None:
        """HTTP 500 after a good scrape: a marker per series on the bus, and a counted failure."""
        _Changing.body = 'up_a 1\nup_b{x="1"} 2\n'
        markers = await collect(nc, "metrics.pdown.*")
        runner = SamplerRunner(Publisher(nc), backoff_initial=30.0)
        slot = runner.add(PrometheusSampler(), {"url": changing, "prefix": "pdown"},
                          interval=0.2)
        await runner.start()
        try:
            await markers.wait_for(2)  # a good scrape of both
            _Changing.status = 500
            got = await markers.wait_until(lambda msgs: len(_stale(msgs)) >= 2)
        finally:
            await runner.stop()
        ended = _stale(got)
        assert sorted((s.name, s.labels.get("x")) for s in ended) == [
            ("pdown.up_a", None), ("pdown.up_b", "1")]
        assert all(s.ts is not None and s.labels["host"] for s in ended)
        assert slot.stats.failures >= 1 and "HTTP 500" in (slot.stats.last_error or "")

    async def test_the_engine_resolves_a_vanished_series_at_its_marker(
            self, nc: Client, nats_url: str, changing: str, tmp_path: Path) -> None:
        """Firing on a scraped series; it vanishes: resolved at the marker's ts, not 5m later."""
        rules = tmp_path / "rules.yaml"
        rules.write_text("rules:\n  - {name: pstale-hot, metric: pstale.temp, when: '> 5', "
                         "actions: [log]}\n")
        seen = await collect(nc, "metrics.pstale.temp")
        engine = EngineProcess(nats_url, [rules]).start()
        runner = SamplerRunner(Publisher(nc))
        runner.add(PrometheusSampler(), {"url": changing, "prefix": "pstale"}, interval=0.2)
        _Changing.body = "temp 9\nother 1\n"
        await runner.start()
        try:
            (fired,) = await wait_triggers(nc, "triggers.pstale-hot", 1)
            _Changing.body = "other 1\n"
            fired, resolved = await wait_triggers(nc, "triggers.pstale-hot", 2)
            (marker,) = _stale(await seen.wait_until(lambda msgs: bool(_stale(msgs))))
        finally:
            await runner.stop()
            engine.stop_ok()
        assert (fired.state, resolved.state) == ("firing", "resolved")
        assert resolved.at == marker.ts and resolved.labels == fired.labels
