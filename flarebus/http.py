"""Outgoing HTTP, shared by the http/webhook/slack actions and the prometheus sampler.

Everything goes through httpx (it replaced a hand-written HTTP/1.1 client that
opened one connection per request and knew no proxies). What flarebus adds on
top is kept here so the plugins stay small and agree with each other:

- one ``httpx.AsyncClient`` per plugin or sampler instance (``LazyClient``),
  so its keep-alive pool lives as long as the instance and carries the
  instance's fixed config (timeout, headers); made on first use, inside the
  event loop that uses it, and closed by the owner's ``close()``;
- ``trust_env=True``: ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``/``NO_PROXY``
  apply, read when the client is made;
- redirects are not followed unless asked: a POST that follows a redirect
  would leave ``allow_hosts`` behind;
- ``failure_reason``: one readable line for a transport error (``cannot
  connect to host:port: Connection refused``) instead of httpx's
  ``All connection attempts failed``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx

#: What the plugins catch and read, named here so that this is the one module naming
#: httpx (moving to a fork such as httpx2 is then a change of imports in one file).
RequestFailed = httpx.HTTPError
RequestTimeout = httpx.TimeoutException
Response = httpx.Response

USER_AGENT = "flarebus"
#: How much of an answer's body is read: enough for any webhook reply (and reading a
#: body to its end is what lets the connection be reused); past it the rest is dropped
#: together with the connection.
MAX_BODY = 64 * 1024


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


def check_headers(headers: Mapping[str, str]) -> None:
    """ValueError for a header httpx would refuse at send time (line breaks, non-ASCII)."""
    for key, value in headers.items():
        for what, text in (("name", key), ("value", value)):
            if any(c in text for c in "\r\n\0") or not text.isascii():
                raise ValueError(f"headers.{key}: the {what} must be ASCII on one line")


class LazyClient:
    """An ``httpx.AsyncClient`` made on first ``get()``; ``aclose()`` closes it.

    Lazy so that a plugin's ``init`` (which may run in a worker thread) never
    creates loop-bound state, and so that a closed owner opens a fresh pool if
    it is used again (the sampler runtime closes a failed sampler and retries).
    """

    def __init__(self, timeout: float, *headers: Mapping[str, str],
                 follow_redirects: bool = False) -> None:
        self.timeout = timeout
        self.layers = ({"User-Agent": USER_AGENT}, *headers)
        self.follow_redirects = follow_redirects
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            headers = httpx.Headers()
            for layer in self.layers:  # later layers win, whatever the names' case
                headers.update(layer)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), headers=headers, trust_env=True,
                follow_redirects=self.follow_redirects)
        return self._client

    @property
    def is_open(self) -> bool:
        """A client exists and is not closed (connections may be kept alive)."""
        return self._client is not None and not self._client.is_closed

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


async def read_capped(response: httpx.Response, limit: int = MAX_BODY) -> bytes:
    """Up to ``limit`` bytes of a streamed answer's body (all of it when it is smaller)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[:limit]


def failure_reason(exc: RequestFailed, url: str) -> str:
    """One line saying why a request failed, naming the OS error under httpx's wrapping."""
    if isinstance(exc, httpx.ConnectError):
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"cannot connect to {parts.hostname}:{port}: {_os_reason(exc) or exc}"
    reason = _os_reason(exc) or str(exc)  # ReadError('') says nothing without its cause
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


def _os_reason(exc: BaseException) -> str | None:
    """The innermost OSError's text: ``Connection refused``, ``Name or service not known``."""
    reason = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror) and current.strerror:
            reason = current.strerror
        elif isinstance(current, OSError) and current.errno:
            reason = os.strerror(current.errno)
        current = current.__cause__ or current.__context__
    return reason
