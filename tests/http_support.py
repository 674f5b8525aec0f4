"""Real HTTP servers on loopback for the tests: one that counts TCP connections, and a proxy.

Both speak HTTP/1.1 with keep-alive (the stdlib default is HTTP/1.0, which
closes after every answer and so could never show a client reusing a connection),
with Nagle's algorithm off: http.server writes the head and the body of an answer
separately, and on a kept-alive connection the body would otherwise wait for the
client's delayed ACK (40 ms an answer).
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import msgspec

#: Headers that describe one hop, never forwarded by a proxy (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "content-length"})


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on a free loopback port; ``connections`` counts accepted sockets."""

    daemon_threads = True
    #: the stdlib's 5 overflows when a client opens many connections at once, and with
    #: SYN cookies Linux then resets the connections it could not queue
    request_queue_size = 128

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.disable_nagle_algorithm = True
        super().__init__(("127.0.0.1", 0), handler)
        self.connections = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        # a short poll: stop() (shutdown) waits up to one poll interval
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def get_request(self) -> tuple[socket.socket, Any]:
        accepted = super().get_request()
        self.connections += 1  # only the serve_forever thread accepts: no lock needed
        return accepted

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Relay(BaseHTTPRequestHandler):
    """Forwards an absolute-form request (``POST http://host:port/path``) and relays the answer."""

    server: ProxyServer

    def relay(self) -> None:
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "not a proxy request")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path or "/", body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.server.relayed.append(self.path)
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() not in ("date", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = relay

    def log_message(self, *args: Any) -> None:
        pass


class ProxyServer(LoopbackServer):
    """A small forwarding HTTP proxy; ``relayed`` lists the URLs it forwarded."""

    def __init__(self) -> None:
        self.relayed: list[str] = []
        super().__init__(_Relay)


class Received(msgspec.Struct):
    """One POST a RecordingServer received."""

    path: str
    headers: dict[str, str]
    body: bytes


class RecordingServer(LoopbackServer):
    """Records every POST; ``/status/N`` answers N; ``stall_next`` delays one answer."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        #: seconds the next POST waits before answering (a server that stalls once)
        self.stall_next = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.received.append(Received(self.path, dict(self.headers.items()), body))
                stall, outer.stall_next = outer.stall_next, 0.0
                time.sleep(stall)
                status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith(
                    "/status/") else 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
