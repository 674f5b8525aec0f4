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
- with an ``AddressPolicy`` (the actions' URLs, which rule authors write; not
  the prometheus sampler's, which the operator writes), every connection goes
  through ``_GuardedBackend``: the host is resolved, every address checked
  (``flarebus.addresses``), and the connection made to a checked address, so
  the name cannot resolve elsewhere between check and connect (DNS rebinding);
  TLS still verifies the certificate against the URL's host name (SNI and the
  Host header come from the URL, not from the address). A redirect, when one is
  followed, opens its connection the same way. Through a proxy from the
  environment the proxy connects, not flarebus: the target name is then
  resolved and checked before the request (not pinned);
- ``failure_reason``: one readable line for a transport error (``cannot
  connect to host:port: Connection refused``) instead of httpx's
  ``All connection attempts failed``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from flarebus.addresses import AddressPolicy, AddressRefused

#: What the plugins catch and read, named here so that this is the one module naming
#: httpx (moving to a fork such as httpx2 is then a change of imports in one file).
RequestFailed = httpx.HTTPError
Refused = AddressRefused
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


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self.policy = policy
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        addresses = await self.policy.resolve(host, port)  # AddressRefused goes up as it is
        failure: Exception | None = None
        for address in addresses:  # each one checked: the first that answers
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address,
                                                    socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(path, path, "a unix socket")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guard(client: httpx.AsyncClient, policy: AddressPolicy) -> httpx.AsyncClient:
    """``client`` with the network backend of its direct transport guarded by ``policy``.

    httpx takes no network backend, and a ``transport=`` of our own would turn off
    the proxies from the environment; so the backend is swapped on the pool of the
    transport httpx built (tests/test_http_policy.py fails if httpx stops honouring it).
    """
    pool: Any = getattr(client._transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx has no connection pool to guard: pin flarebus' httpx")
    pool._network_backend = _GuardedBackend(policy, pool._network_backend)
    return client


class LazyClient:
    """An ``httpx.AsyncClient`` made on first ``get()``; ``aclose()`` closes it.

    Lazy so that a plugin's ``init`` (which may run in a worker thread) never
    creates loop-bound state, and so that a closed owner opens a fresh pool if
    it is used again (the sampler runtime closes a failed sampler and retries).
    """

    def __init__(self, timeout: float, *headers: Mapping[str, str],
                 follow_redirects: bool = False, policy: AddressPolicy | None = None) -> None:
        self.timeout = timeout
        self.layers = ({"User-Agent": USER_AGENT}, *headers)
        self.follow_redirects = follow_redirects
        self.policy = policy
        self._client: httpx.AsyncClient | None = None

    def get(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            headers = httpx.Headers()
            for layer in self.layers:  # later layers win, whatever the names' case
                headers.update(layer)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout), headers=headers, trust_env=True,
                follow_redirects=self.follow_redirects)
            if self.policy is not None:
                guard(self._client, self.policy)
        return self._client

    async def check(self, url: str) -> None:
        """Through a proxy, check the target's addresses here (the proxy connects, unpinned)."""
        client = self.get()
        if self.policy is None or client._transport_for_url(httpx.URL(url)) is client._transport:
            return  # direct: the guarded backend checks (and pins) at connect time
        parts = urlsplit(url)
        await self.policy.resolve(parts.hostname or "",
                                  parts.port or (443 if parts.scheme == "https" else 80))

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
