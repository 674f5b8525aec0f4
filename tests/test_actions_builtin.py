"""The built-in plugins against real things: a local HTTP server, the file system, NATS, logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from flarebus.actions.builtins.file import FileAction, FileConfig, parse_size, safe_component
from flarebus.actions.builtins.http import HttpAction, HttpConfig
from flarebus.actions.builtins.log import LogAction, LogConfig
from flarebus.actions.builtins.nats import NatsAction, NatsConfig
from flarebus.actions.builtins.sinks import SlackSink, WebhookSink
from flarebus.actions.host import PluginHost
from flarebus.config import PluginSettings
from flarebus.errors import ActionError
from flarebus.events import ActionRef, trigger_decoder
from tests.http_support import ProxyServer
from tests.http_support import RecordingServer as Server
from tests.plugin_pkg.harness import registry_of, trigger
from tests.support import collect

# -- a real HTTP server -----------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


async def http_action(**config: Any) -> HttpAction:
    action = HttpAction()
    await action.init(msgspec.convert(config, HttpConfig))
    action.validate_config()
    return action


async def test_http_posts_the_trigger_json(http_server: Server) -> None:
    """2xx: success, and the server received the trigger exactly as on the wire."""
    t = trigger("web")
    action = await http_action(url=f"{http_server.url}/hook", headers={"X-Team": "ops"})
    await action.execute(t)
    got = http_server.received[-1]
    assert got.path == "/hook"
    assert trigger_decoder.decode(got.body) == t
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Team"] == "ops"


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False),
                                                   (404, True), (401, True)])
async def test_http_non_2xx_fails(http_server: Server, status: int, permanent: bool) -> None:
    """Any non-2xx answer fails the action; 4xx (but 408/429) is not worth retrying."""
    action = await http_action(url=f"{http_server.url}/status/{status}")
    with pytest.raises(ActionError) as info:
        await action.execute(trigger())
    assert f"HTTP {status}" in info.value.error
    assert info.value.permanent is permanent


async def test_http_timeout_is_retryable_and_leaves_the_instance_usable(
        http_server: Server) -> None:
    """No answer within timeout: a retryable failure; the instance's next POST still works."""
    action = await http_action(url=f"{http_server.url}/stall", timeout=1)
    try:
        await action.execute(trigger())  # a kept-alive connection now exists
        http_server.stall_next = 3.0
        with pytest.raises(ActionError) as info:
            await action.execute(trigger())
        assert "no answer within 1s" in info.value.error
        assert not info.value.permanent
        await action.execute(trigger())  # the cut-off connection was dropped, not reused
    finally:
        await action.close()


async def test_http_hmac_signature_verifies(http_server: Server) -> None:
    """With a secret, the signature header is the HMAC-SHA256 of exactly the body sent."""
    action = await http_action(url=f"{http_server.url}/signed", secret="s3cret",
                               signature_header="X-Hub-Signature-256")
    await action.execute(trigger())
    got = http_server.received[-1]
    expected = hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Hub-Signature-256"] == f"sha256={expected}"


async def test_http_connection_refused_is_a_retryable_failure() -> None:
    """Nobody listening: a retryable failure naming the address."""
    action = await http_action(url="http://127.0.0.1:9/x", timeout=2)
    with pytest.raises(ActionError) as info:
        await action.execute(trigger())
    assert "cannot connect to 127.0.0.1:9" in info.value.error
    assert not info.value.permanent


async def test_http_allow_list_refuses_other_hosts(http_server: Server) -> None:
    """allow_hosts: a URL to another host is refused at config time."""
    with pytest.raises(ValueError, match="not in allow_hosts"):
        await http_action(url=f"{http_server.url}/x", allow_hosts=["hooks.example.com"])
    action = await http_action(url=f"{http_server.url}/allowed", allow_hosts=["127.0.0.1"])
    await action.execute(trigger())
    assert http_server.received[-1].path == "/allowed"


async def test_http_endpoint_defaults_to_HTTP_PLUGIN_ENDPOINT(
        http_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config.url: HTTP_PLUGIN_ENDPOINT, as the seed's http action read it."""
    monkeypatch.setenv("HTTP_PLUGIN_ENDPOINT", f"{http_server.url}/from-env")
    action = await http_action()
    await action.execute(trigger())
    assert http_server.received[-1].path == "/from-env"
    monkeypatch.delenv("HTTP_PLUGIN_ENDPOINT")
    with pytest.raises(ActionError, match="no url"):
        await (await http_action()).execute(trigger())


async def test_webhook_and_slack_sinks_post_their_bodies(http_server: Server) -> None:
    """notify(rule_name, msg): webhook JSON and a Slack-compatible {"text": ...}."""
    webhook, slack = WebhookSink(), SlackSink()
    await webhook.init(HttpConfig(url=f"{http_server.url}/webhook"))
    await slack.init(HttpConfig(url=f"{http_server.url}/slack"))
    await webhook.notify("high-cpu", "CPU 93 on web-1")
    assert json.loads(http_server.received[-1].body) == {"rule": "high-cpu",
                                                         "message": "CPU 93 on web-1"}
    await slack.notify("high-cpu", "CPU 93 on web-1")
    assert json.loads(http_server.received[-1].body) == {"text": "*high-cpu*: CPU 93 on web-1"}


# -- http: connections, proxies ----------------------------------------------------------


@pytest.fixture
def proxy() -> Iterator[ProxyServer]:
    server = ProxyServer()
    yield server
    server.stop()


async def test_http_triggers_of_one_instance_share_one_connection(http_server: Server) -> None:
    """Several triggers through one action instance: one TCP connection; close() ends it."""
    action = await http_action(url=f"{http_server.url}/reuse")
    before = http_server.connections
    try:
        for _ in range(5):
            await action.execute(trigger())
        assert http_server.connections - before == 1
        await action.close()
        await action.execute(trigger())  # closed: the next trigger opens a new connection
        assert http_server.connections - before == 2
    finally:
        await action.close()
    assert [r.path for r in http_server.received[-6:]] == ["/reuse"] * 6


async def test_http_goes_through_the_proxy_from_the_environment(
        http_server: Server, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY set: the proxy relays the POST, which arrives intact and signed."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    action = await http_action(url=f"{http_server.url}/via-proxy", secret="s3cret")
    t = trigger()
    try:
        await action.execute(t)
    finally:
        await action.close()
    assert proxy.relayed == [f"{http_server.url}/via-proxy"]
    got = http_server.received[-1]
    assert got.path == "/via-proxy" and trigger_decoder.decode(got.body) == t
    expected = hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Flarebus-Signature"] == f"sha256={expected}"


async def test_http_NO_PROXY_bypasses_the_proxy(
        http_server: Server, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_PROXY naming the host: the POST goes straight to the server."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    action = await http_action(url=f"{http_server.url}/direct")
    try:
        await action.execute(trigger())
    finally:
        await action.close()
    assert proxy.relayed == []
    assert http_server.received[-1].path == "/direct"


async def test_the_worker_host_closes_every_http_instance(http_server: Server) -> None:
    """PluginHost.close() closes the clients of the base instance and of per-rule variants."""
    registry = registry_of()
    host = PluginHost(registry, {"http": PluginSettings(config={"url": f"{http_server.url}/h"})})
    await host.start()
    variant_ref = ActionRef(plugin="http", config={"headers": {"X-Rule": "own"}})
    try:
        await host.run(ActionRef(plugin="http"), trigger())
        await host.run(variant_ref, trigger())
        base = (await host.prepared(ActionRef(plugin="http"), trigger())).instance
        variant = (await host.prepared(variant_ref, trigger())).instance
        assert base is not variant and base.http.is_open and variant.http.is_open
        assert http_server.received[-1].headers["X-Rule"] == "own"
    finally:
        await host.close()
    assert not base.http.is_open and not variant.http.is_open


async def test_http_refuses_headers_it_cannot_send() -> None:
    """A header with a line break or non-ASCII text is a config error, not a failing send."""
    for headers in ({"X-A": "one\r\nX-B: two"}, {"X-A": "caf\u00e9"}):
        with pytest.raises(ValueError, match=r"headers\.X-A"):
            await http_action(url="http://127.0.0.1:9/x", headers=headers)


# -- file -------------------------------------------------------------------------------


async def file_action(directory: Path, **config: Any) -> FileAction:
    action = FileAction()
    await action.init(msgspec.convert({"dir": str(directory), **config}, FileConfig))
    action.validate_config()
    return action


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_file_creates_a_file_of_the_configured_size_named_after_metric_and_time(
        tmp_path: Path) -> None:
    """One file per trigger, FILE_ACTION_SIZE bytes, named <metric>_<UTC time>."""
    action = await file_action(tmp_path / "out", size=4096)
    t = trigger(metric_name="disk.used")
    action.execute(t)
    [path] = all_files(tmp_path)
    assert path.parent == tmp_path / "out"
    assert path.name.startswith("disk.used_" + time.strftime("%Y%m%dT", time.gmtime(t.at)))
    assert path.stat().st_size == 4096
    assert trigger_decoder.decode(path.read_bytes().split(b"\n", 1)[0]) == t
    action.execute(t)  # same metric, same instant: a second file, not an overwrite
    assert len(all_files(tmp_path)) == 2


@pytest.mark.parametrize("metric_name", [
    "../../escape", "/etc/passwd", "..", "a/../../b", "x\x00y", "..\\..\\win", "." * 300])
async def test_file_never_writes_outside_its_dir_whatever_the_metric_name(
        tmp_path: Path, metric_name: str) -> None:
    """Path traversal in the metric name: the file still lands directly in the directory."""
    root = tmp_path / "jail"
    (await file_action(root / "files", size=16)).execute(trigger(metric_name=metric_name))
    [path] = all_files(tmp_path)
    assert path.parent == root / "files"


async def test_file_name_template_with_labels_cannot_escape(tmp_path: Path) -> None:
    """Labels in the name template are sanitised too: `../` in a label stays inside."""
    action = await file_action(tmp_path / "files", size=0, name="{labels[host]}-{metric_name}")
    action.execute(trigger(labels={"host": "../../../tmp/pwned"}, metric_name="cpu"))
    [path] = all_files(tmp_path)
    assert path.parent == tmp_path / "files"
    assert path.name == "_.._.._tmp_pwned-cpu"


async def test_file_refuses_a_symlinked_target(tmp_path: Path) -> None:
    """A name whose resolved path leaves the dir (a planted symlink) is refused."""
    files = tmp_path / "files"
    action = await file_action(files, mode="jsonl")
    (files / "triggers.jsonl").symlink_to(tmp_path / "outside.jsonl")  # planted afterwards
    with pytest.raises(ActionError, match="outside"):
        action.execute(trigger())
    assert not (tmp_path / "outside.jsonl").exists()


async def test_file_jsonl_mode_appends_one_line_per_trigger(tmp_path: Path) -> None:
    """jsonl: each trigger appended as one JSON line to one file."""
    action = await file_action(tmp_path, mode="jsonl")
    triggers = [trigger(), trigger()]
    for t in triggers:
        action.execute(t)
    lines = (tmp_path / "triggers.jsonl").read_bytes().splitlines()
    assert [trigger_decoder.decode(line) for line in lines] == triggers


async def test_file_defaults_come_from_the_seed_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FILE_ACTION_DIR and FILE_ACTION_SIZE are the defaults; without them temp dir and 1 MiB."""
    monkeypatch.setenv("FILE_ACTION_DIR", str(tmp_path / "env-dir"))
    monkeypatch.setenv("FILE_ACTION_SIZE", "2KiB")
    action = FileAction()
    await action.init(FileConfig())
    action.execute(trigger())
    [path] = all_files(tmp_path)
    assert path.parent == tmp_path / "env-dir" and path.stat().st_size == 2048
    monkeypatch.delenv("FILE_ACTION_DIR")
    monkeypatch.delenv("FILE_ACTION_SIZE")
    await action.init(FileConfig())
    assert action.size == 1024 * 1024
    assert action.dir.name == "metric-files"
    assert [parse_size(s) for s in ("10", "1k", "1MiB")] == [10, 1000, 1024 * 1024]
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert safe_component("..") == "_" and "/" not in safe_component("a/b")


# -- log and nats -----------------------------------------------------------------------


async def test_log_writes_one_structured_line(caplog: pytest.LogCaptureFixture) -> None:
    """log: rule, state, metric_name, value, threshold, duration and labels on one line."""
    action = LogAction()
    await action.init(LogConfig())
    with caplog.at_level(logging.INFO, logger="flarebus.actions.log"):
        await action.execute(trigger("high-cpu", labels={"host": "web 1"}))
    [record] = caplog.records
    line = record.getMessage()
    assert "\n" not in line
    for part in ("rule=high-cpu", "state=firing", "metric_name=cpu.usage", "value=93.5",
                 'threshold="> 80"', "duration=31", 'labels={"host":"web 1"}'):
        assert part in line


async def test_nats_republishes_the_trigger(nc: Client) -> None:
    """nats: the trigger, unchanged, on the configured subject (templated by rule)."""
    action = NatsAction()
    action.use_nats(nc)
    await action.init(NatsConfig(subject="alerts.{severity}.{rule}"))
    action.validate_config()
    got = await collect(nc, "alerts.warning.disk-full")
    t = trigger("disk-full")
    await action.execute(t)
    [msg] = await got.wait_for(1)
    assert trigger_decoder.decode(msg.data) == t


def test_builtins_are_importable_without_side_effects() -> None:
    """Importing a built-in creates no files and no connections (only init() does)."""
    before = set(os.listdir(os.getcwd()))
    import flarebus.actions.builtins.file  # noqa: F401

    assert set(os.listdir(os.getcwd())) == before
