"""What the built-ins send for a group: Alertmanager's webhook JSON (checked against a real
Alertmanager), one Slack message, one log record, one file or JSON line, the group as JSON."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from bench.latency_http import free_port
from bench.latency_prometheus import wait_ready
from bench.latency_trials import Children
from flarebus.actions.builtins.file import FileAction, FileConfig
from flarebus.actions.builtins.http import HttpAction, HttpConfig
from flarebus.actions.builtins.log import LogAction, LogConfig
from flarebus.actions.builtins.sinks import SlackSink, WebhookConfig, WebhookSink
from flarebus.amwebhook import ZERO_TIME, go_time, webhook_body
from flarebus.events import Trigger
from flarebus.grouping import TriggerGroup, fingerprint, group_key, make_group
from tests.http_support import RecordingServer
from tests.plugin_pkg.harness import trigger, wait_until
from tests.support import system_binary

T0 = 1764600000.25


def alert(host: str, core: str, state: str = "firing", summary: str = "") -> Trigger:
    t = trigger("high-cpu", labels={"host": host, "core": core})
    return msgspec.structs.replace(
        t, id=f"{host}-{core}-{state}", state=state, active_since=T0, at=T0 + 40,
        annotations={"summary": summary or f"CPU high on {host}/{core}", "runbook": "rb/cpu"})


def sample_group() -> TriggerGroup:
    alerts = [alert("web-1", "0"), alert("web-1", "1"), alert("web-1", "2", "resolved")]
    labels = {"alertname": "high-cpu", "host": "web-1"}
    return make_group("high-cpu", group_key(labels), labels, alerts, number=3)


@pytest.fixture(scope="module")
def receiver() -> Iterator[RecordingServer]:
    server = RecordingServer()
    yield server
    server.stop()


async def sink(cls: type[Any], config_type: type[Any], **config: Any) -> Any:
    plugin = cls()
    await plugin.init(msgspec.convert(config, config_type))
    plugin.validate_config()
    return plugin


# -- the webhook: Alertmanager's JSON, version 4 ----------------------------------------


async def test_webhook_posts_alertmanagers_json_field_by_field(
        receiver: RecordingServer) -> None:
    """One POST per group with exactly Alertmanager's v4 fields and values."""
    hook = await sink(WebhookSink, WebhookConfig, url=f"{receiver.url}/am", receiver="ops",
                      external_url="http://flarebus.example", generator_url="http://g/{rule}")
    await hook.execute_group(sample_group())
    body = json.loads(receiver.received[-1].body)
    assert list(body) == ["receiver", "status", "alerts", "groupLabels", "commonLabels",
                          "commonAnnotations", "externalURL", "version", "groupKey",
                          "truncatedAlerts"]
    assert body["receiver"] == "ops" and body["status"] == "firing"
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["groupKey"] == '{}:{alertname="high-cpu", host="web-1"}'
    assert body["groupLabels"] == {"alertname": "high-cpu", "host": "web-1"}
    assert body["commonLabels"] == {"alertname": "high-cpu", "host": "web-1",
                                    "severity": "warning"}
    assert body["commonAnnotations"] == {"runbook": "rb/cpu"}
    assert body["externalURL"] == "http://flarebus.example"
    assert [a["status"] for a in body["alerts"]] == ["firing", "firing", "resolved"]
    first, last = body["alerts"][0], body["alerts"][2]
    assert list(first) == ["status", "labels", "annotations", "startsAt", "endsAt",
                           "generatorURL", "fingerprint"]
    assert first["labels"] == {"alertname": "high-cpu", "host": "web-1", "core": "0",
                               "severity": "warning"}
    assert first["annotations"] == {"summary": "CPU high on web-1/0", "runbook": "rb/cpu"}
    assert first["startsAt"] == "2025-12-01T14:40:00.25Z" and first["endsAt"] == ZERO_TIME
    assert last["endsAt"] == "2025-12-01T14:40:40.25Z"
    assert first["generatorURL"] == "http://g/high-cpu"
    assert first["fingerprint"] == fingerprint(first["labels"])


def test_max_alerts_truncates_and_counts_the_rest() -> None:
    """Past max_alerts the alerts are cut (firing kept first) and truncatedAlerts counts them."""
    body = webhook_body(sample_group(), max_alerts=2)
    assert len(body["alerts"]) == 2 and body["truncatedAlerts"] == 1
    assert body["commonAnnotations"] == {"runbook": "rb/cpu"}


def test_go_time_is_rfc3339_as_go_writes_it() -> None:
    """Whole seconds have no fraction; a fraction has no trailing zeros; always UTC Z."""
    assert go_time(0) == "1970-01-01T00:00:00Z"
    assert go_time(1.5) == "1970-01-01T00:00:01.5Z"


AM_CONFIG = """\
route:
  receiver: hook
  group_by: [alertname, host]
  group_wait: 1s
  group_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: '{url}'
"""


async def test_the_webhook_body_matches_a_real_alertmanagers(
        receiver: RecordingServer, tmp_path: Path) -> None:
    """Alertmanager itself, given the same alerts, sends the same fields, labels, group key
    and fingerprints (its endsAt for firing alerts is its own resolve timeout)."""
    binary = system_binary("prometheus-alertmanager")
    children = Children(tmp_path)
    path = f"/real-am-{time.time_ns()}"
    (tmp_path / "am.yml").write_text(AM_CONFIG.format(url=receiver.url + path))
    address = f"127.0.0.1:{free_port()}"
    group = make_group("high-cpu", group_key({"alertname": "high-cpu", "host": "web-1"}),
                       {"alertname": "high-cpu", "host": "web-1"},
                       [alert("web-1", "0"), alert("web-1", "1")])
    ours = webhook_body(group, receiver="hook", external_url=f"http://{address}")
    try:
        children.start("alertmanager", [
            binary, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address={address}", "--cluster.listen-address=",
            f"--web.external-url=http://{address}"])
        await wait_ready(f"http://{address}", children, "alertmanager")
        posted = [{k: a[k] for k in ("labels", "annotations", "startsAt", "generatorURL")}
                  for a in ours["alerts"]]
        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await client.post(f"http://{address}/api/v2/alerts", json=posted)
            assert answer.status_code == 200, answer.text
        await wait_until(lambda: any(r.path == path for r in receiver.received), 30,
                         what="Alertmanager's webhook")
    finally:
        children.stop()
    theirs = json.loads(next(r.body for r in receiver.received if r.path == path))
    assert sorted(theirs) == sorted(ours)
    for key in ("receiver", "status", "groupLabels", "commonLabels", "commonAnnotations",
                "externalURL", "version", "groupKey", "truncatedAlerts"):
        assert theirs[key] == ours[key], key
    by_fp = {a["fingerprint"]: a for a in theirs["alerts"]}
    for mine in ours["alerts"]:
        real = by_fp[mine["fingerprint"]]
        assert sorted(real) == sorted(mine)
        for key in ("status", "labels", "annotations", "startsAt", "generatorURL"):
            assert real[key] == mine[key], key


# -- slack, log, file, http -------------------------------------------------------------


async def test_slack_sends_one_message_listing_the_alerts(receiver: RecordingServer) -> None:
    """One Slack message per group: a bold title with counts and labels, a line per alert."""
    slack = await sink(SlackSink, HttpConfig, url=f"{receiver.url}/slack")
    before = len(receiver.received)
    await slack.execute_group(sample_group())
    assert len(receiver.received) == before + 1
    assert json.loads(receiver.received[-1].body)["text"] == (
        "*[FIRING:2] high-cpu host=web-1*\nFiring:\n- CPU high on web-1/0\n"
        "- CPU high on web-1/1\nResolved:\n- CPU high on web-1/2")


async def test_log_writes_one_record_per_group(caplog: pytest.LogCaptureFixture) -> None:
    """logfmt: a head with the counts and group labels, then an indented line per alert."""
    action = LogAction()
    await action.init(LogConfig())
    with caplog.at_level(logging.INFO, "flarebus.actions.log"):
        await action.execute_group(sample_group())
    (record,) = caplog.records
    head, *alerts = record.getMessage().splitlines()
    assert head == ('group rule=high-cpu status=firing firing=2 resolved=1 notification=3 '
                    'labels={"alertname":"high-cpu","host":"web-1"}')
    assert [a.split()[1] for a in alerts] == ["state=firing", "state=firing", "state=resolved"]


async def test_file_writes_one_json_line_or_one_file_per_group(tmp_path: Path) -> None:
    """jsonl mode: one line holding the group; create mode: one file named for the group."""
    action = FileAction()
    await action.init(FileConfig(dir=str(tmp_path), mode="jsonl", size=4096))
    action.validate_config()
    action.execute_group(sample_group())
    (line,) = (tmp_path / "triggers.jsonl").read_text().splitlines()
    assert msgspec.json.decode(line, type=TriggerGroup) == sample_group()
    create = FileAction()
    await create.init(FileConfig(dir=str(tmp_path / "c"), size=65536,
                                 name="{rule}_{state}_{labels[host]}"))
    create.validate_config()
    create.execute_group(sample_group())
    (made,) = (tmp_path / "c").iterdir()
    assert made.name == "high-cpu_firing_web-1"
    assert json.loads(made.read_bytes().rstrip(b"\0"))["rule"] == "high-cpu"


async def test_http_posts_the_group_json(receiver: RecordingServer) -> None:
    """The http action POSTs the TriggerGroup, its triggers as on the wire."""
    action = HttpAction()
    await action.init(HttpConfig(url=f"{receiver.url}/group"))
    action.validate_config()
    await action.execute_group(sample_group())
    got = msgspec.json.decode(receiver.received[-1].body, type=TriggerGroup)
    assert got == sample_group()
