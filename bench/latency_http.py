"""The two HTTP ends of the latency bench: a target whose gauge flips, and a webhook receiver.

Both run in threads of the bench process on loopback (``tests.http_support``'s
server: HTTP/1.1 keep-alive, Nagle off, so neither end adds a delayed-ACK 40 ms
to what is measured). The instant of a flip is a scheduled wall-clock time:
the gauge is computed when a scrape asks for it, so the value changes exactly
then, whoever scrapes. Every scrape's arrival is kept, which gives the "sample"
step of the breakdown for scrapers that do not report their scrape time.

The receiver stamps a notification when its request reaches the handler,
before reading the body, and keeps the first notification of each
(path, alert, trial): flarebus's http action and Alertmanager's webhook both
land here, told apart by the path.
"""

from __future__ import annotations

import bisect
import json
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http_support import LoopbackServer

BELOW, ABOVE = 10.0, 100.0  # the rule is `> 50`
GAUGE = "latency_gauge"


def free_port() -> int:
    """A free loopback port, for programs that want a port on their command line."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_exposition(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer 200 with ``body`` as Prometheus text exposition."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _TargetHandler(BaseHTTPRequestHandler):
    server: FlipTarget

    def do_GET(self) -> None:
        now = time.time()
        self.server.scraped(now)
        lines = [f"# TYPE {GAUGE} gauge"]
        for trial, flip in self.server.flips.items():
            lines.append(f'{GAUGE}{{trial="{trial}"}} {ABOVE if now >= flip else BELOW:g}')
        send_exposition(self, ("\n".join(lines) + "\n").encode())

    def log_message(self, *args: Any) -> None:
        pass


class FlipTarget(LoopbackServer):
    """Serves ``latency_gauge{trial="N"}`` in Prometheus text format: BELOW until its flip."""

    def __init__(self, trials: list[str]) -> None:
        self.flips: dict[str, float] = dict.fromkeys(trials, float("inf"))
        self.scrapes: list[float] = []
        self._lock = threading.Lock()
        super().__init__(_TargetHandler)
        self.metrics_url = f"{self.url}/metrics"

    def scraped(self, at: float) -> None:
        with self._lock:
            bisect.insort(self.scrapes, at)

    def first_scrape_after(self, at: float) -> float | None:
        with self._lock:
            i = bisect.bisect_left(self.scrapes, at)
            return self.scrapes[i] if i < len(self.scrapes) else None


@dataclass(frozen=True)
class Notification:
    """One alert of one trial as the receiver got it."""

    arrived: float
    fired: float | None  # the trigger's `at` / the alert's startsAt
    active_since: float | None  # flarebus: the first sample that held


def _instant(text: str) -> float:
    """An RFC 3339 time (Alertmanager's, nanoseconds and all) as a Unix timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def parse_notification(body: dict[str, Any], arrived: float) -> dict[tuple[str, str],
                                                                      Notification]:
    """(alert or rule name, trial) -> Notification, for a flarebus trigger or an AM webhook."""
    if "alerts" in body:  # Alertmanager's webhook: a group of alerts
        return {(a["labels"]["alertname"], a["labels"].get("trial", "")):
                Notification(arrived, _instant(a["startsAt"]), None)
                for a in body["alerts"] if a.get("status") == "firing"}
    if body.get("state") != "firing":
        return {}
    return {(body["rule"], body["labels"].get("trial", "")):
            Notification(arrived, body["at"], body["active_since"])}


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.server.received(self.path.strip("/"), json.loads(body), arrived)

    def log_message(self, *args: Any) -> None:
        pass


class Receiver(LoopbackServer):
    """Webhook receiver: ``notes[path][(name, trial)]`` is the first notification of each."""

    def __init__(self) -> None:
        self.notes: dict[str, dict[tuple[str, str], Notification]] = {}
        self._lock = threading.Lock()
        super().__init__(_ReceiverHandler)

    def received(self, path: str, body: dict[str, Any], arrived: float) -> None:
        with self._lock:
            seen = self.notes.setdefault(path, {})
            for key, note in parse_notification(body, arrived).items():
                seen.setdefault(key, note)

    def get(self, path: str, key: tuple[str, str]) -> Notification | None:
        with self._lock:
            return self.notes.get(path, {}).get(key)
