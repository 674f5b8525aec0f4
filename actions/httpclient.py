"""A small HTTP/1.1 POST on asyncio streams, for the http, webhook and slack plugins.

Why not urllib: it blocks a thread and cannot be cancelled, so a plugin
timeout would leave threads hanging on slow servers. Why not aiohttp/httpx:
they are not dependencies. One request per connection (``Connection: close``)
keeps this correct without a parser for keep-alive or chunked bodies: the
plugins only need the status line.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpError(Exception):
    """The request could not be made or the answer was not HTTP."""


def check_url(url: str, allow_hosts: list[str] | None = None) -> str:
    """The URL's host, once it is an http(s) URL to an allowed host; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url {url!r} is not an http:// or https:// URL")
    host = parts.hostname.lower()
    if allow_hosts is not None and host not in {h.lower() for h in allow_hosts}:
        raise ValueError(f"host {host!r} of url {url!r} is not in allow_hosts "
                         f"({', '.join(allow_hosts) or 'empty'})")
    return host


async def post(url: str, body: bytes, *, headers: Mapping[str, str] | None = None,
               timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> Response:
    """POST ``body`` to ``url``; the status line and headers of the answer.

    ``timeout`` covers connecting, sending and reading the head; on expiry
    TimeoutError is raised and the connection closed.
    """
    async with asyncio.timeout(timeout):
        return await _post(url, body, headers or {}, ssl_context)


async def _post(url: str, body: bytes, headers: Mapping[str, str],
                ssl_context: ssl.SSLContext | None) -> Response:
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or ""
    context = (ssl_context or ssl.create_default_context()) if secure else None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except OSError as exc:
        raise HttpError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    try:
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}",
                 f"Content-Length: {len(body)}", "Connection: close",
                 "User-Agent: flarebus"]
        names = {k.lower() for k in headers}
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
        for key, value in headers.items():
            if "\n" in key or "\r" in key or "\n" in value or "\r" in value:
                raise HttpError(f"header {key!r} holds a line break")
            lines.append(f"{key}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError("response head too large") from None
        except asyncio.IncompleteReadError as exc:
            raise HttpError(f"connection closed before a full response "
                            f"({len(exc.partial)} bytes)") from None
        return _parse_head(head)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _parse_head(head: bytes) -> Response:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    pieces = status_line.split(" ", 2)
    if len(pieces) < 2 or not pieces[0].startswith("HTTP/") or not pieces[1].isdigit():
        raise HttpError(f"not an HTTP response: {status_line[:80]!r}")
    headers = {}
    for line in header_lines:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return Response(int(pieces[1]), pieces[2] if len(pieces) > 2 else "", headers)
