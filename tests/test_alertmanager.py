"""The `alertmanager` action: its alert body, and a real Alertmanager receiving and routing it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bench.latency_http import free_port
from flarebus.actions.builtins.alertmanager import AlertmanagerConfig, alert, rfc3339
from flarebus.events import ActionRef
from tests.plugin_pkg.harness import fresh_stream, publish, running_worker, trigger, wait_until
from tests.support import system_binary
from tests.test_actions_builtin import Server


class TestBody:
    """What is posted: Alertmanager API v2 postable alerts."""

    def test_firing_alert(self) -> None:
        """Labels with alertname and severity, annotations with value and threshold, startsAt
        = when it started firing, endsAt = its time plus firing_ends_after."""
        t = msgspec.structs.replace(trigger("high-cpu", labels={"host": "web-1"}),
                                    annotations={"summary": "hot"}, active_since=1763762400,
                                    at=1763762430.25)
        body = alert(t, AlertmanagerConfig(firing_ends_after=3600))
        assert body == {
            "labels": {"host": "web-1", "alertname": "high-cpu", "severity": "warning"},
            "annotations": {"value": "93.5", "threshold": "> 80", "summary": "hot"},
            "startsAt": "2025-11-21T22:00:00.000Z",
            "endsAt": "2025-11-21T23:00:30.250Z",
            "generatorURL": "flarebus://rules/high-cpu",
        }

    def test_resolved_alert_ends_when_it_resolved(self) -> None:
        """A resolved trigger's endsAt is its own time, which resolves the alert."""
        t = msgspec.structs.replace(trigger("high-cpu"), state="resolved", at=1763762490.0)
        body = alert(t, AlertmanagerConfig(generator_url="https://git/rules#{rule}"))
        assert body["endsAt"] == rfc3339(1763762490.0) == "2025-11-21T22:01:30.000Z"
        assert body["generatorURL"] == "https://git/rules#high-cpu"


@pytest.fixture
def receiver() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Server) -> Iterator[str]:
    """A real Alertmanager on a free port, routing everything to ``receiver`` at once."""
    binary = system_binary("prometheus-alertmanager")
    config = tmp_path / "am.yml"
    config.write_text(
        "route:\n  receiver: hook\n  group_by: ['...']\n  group_wait: 100ms\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: '{receiver.url}/hook'\n        send_resolved: true\n")
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}",
                             f"--storage.path={tmp_path / 'data'}",
                             f"--web.listen-address={address}", "--cluster.listen-address="],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://{address}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(url):
            assert proc.poll() is None, (tmp_path / "am.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "alertmanager not ready in 60s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _alerts(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as answer:
        return json.loads(answer.read())  # type: ignore[no-any-return]


def _notifications(receiver: Server) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received if r.path == "/hook"]


class TestRealAlertmanager:
    """A worker running the action against a real Alertmanager and its webhook receiver."""

    async def test_alerts_appear_and_its_receiver_gets_firing_then_resolved(
            self, private_nc: Client, alertmanager: str, receiver: Server) -> None:
        """The firing alert is listed by /api/v2/alerts and notified; the resolved one is
        notified as resolved."""
        js = await fresh_stream(private_nc)
        action = ActionRef("alertmanager", config={"url": alertmanager})
        firing = msgspec.structs.replace(
            trigger("am-disk", actions=[action], labels={"host": "web-1"}),
            annotations={"summary": "disk 95% full"})
        async with running_worker(private_nc):
            await publish(js, [firing])
            await wait_until(lambda: any(a["labels"].get("alertname") == "am-disk"
                                         for a in _alerts(alertmanager)),
                             timeout=30, what="the alert in Alertmanager")
            [listed] = [a for a in _alerts(alertmanager) if a["labels"]["alertname"] == "am-disk"]
            await wait_until(lambda: any(n["status"] == "firing"
                                         for n in _notifications(receiver)),
                             timeout=30, what="the receiver's firing notification")
            resolved = msgspec.structs.replace(firing, id=firing.id + "-r", state="resolved",
                                               at=time.time())
            await publish(js, [resolved])
            await wait_until(lambda: any(n["status"] == "resolved"
                                         for n in _notifications(receiver)),
                             timeout=30, what="the receiver's resolved notification")
        assert listed["labels"] == {"alertname": "am-disk", "host": "web-1",
                                    "severity": "warning"}
        assert listed["annotations"]["summary"] == "disk 95% full"
        assert listed["status"]["state"] == "active"
        assert listed["generatorURL"] == "flarebus://rules/am-disk"
        assert listed["startsAt"].startswith(rfc3339(firing.active_since)[:19])
        first = next(n for n in _notifications(receiver) if n["status"] == "firing")
        assert first["version"] == "4" and first["receiver"] == "hook"
        assert first["alerts"][0]["labels"]["host"] == "web-1"
        last = next(n for n in _notifications(receiver) if n["status"] == "resolved")
        assert last["alerts"][0]["endsAt"].startswith(rfc3339(resolved.at)[:19])
