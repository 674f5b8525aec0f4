"""Outbound HTTP goes only where the address policy allows, checked after DNS resolution.

The policy is unit-tested with a stand-in resolver (``socket.getaddrinfo``
monkeypatched: no /etc/hosts needed); the HTTP tests use real sockets and a
real loopback server, and show that the refusal is the guard's doing: the same
request without a policy reaches the server.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from flarebus.actions.builtins.http import HttpAction, HttpConfig
from flarebus.actions.builtins.sinks import SlackSink
from flarebus.actions.host import PluginHost
from flarebus.addresses import AddressPolicy, AddressRefused
from flarebus.config import PluginSettings
from flarebus.errors import ActionError
from flarebus.events import ActionRef
from flarebus.http import LazyClient
from tests.http_support import LoopbackServer, ProxyServer
from tests.plugin_pkg.harness import registry_of, trigger

DEFAULT = AddressPolicy.of()
METADATA_REFUSED = re.escape("169.254.169.254 is a cloud metadata address")


class Target(LoopbackServer):
    """Answers 200 and counts; ``/redirect?to=URL`` answers 302 to URL."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                outer.hits.append(self.path)
                parts = urlsplit(self.path)
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", parse_qs(parts.query)["to"][0])
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.port = self.server_address[1]


@pytest.fixture
def target() -> Iterator[Target]:
    server = Target()
    yield server
    server.stop()


def fake_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """``socket.getaddrinfo`` answering from ``answers`` (the policy's lookups only)."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[ipaddress.ip_address(a).version], socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


async def http_action(**config: Any) -> HttpAction:
    action = HttpAction()
    await action.init(msgspec.convert(config, HttpConfig))
    action.validate_config()
    return action


class TestPolicy:
    """What each kind of address gets under the default policy and with opt-ins."""

    @pytest.mark.parametrize(("address", "why"), [
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("::ffff:169.254.169.254", "a cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("0.0.0.0", "not a unicast address"),
        ("::", "not a unicast address"),
        ("224.0.0.1", "not a unicast address"),
        ("255.255.255.255", "not a unicast address"),
        ("127.0.0.1", None),
        ("::1", None),
        ("93.184.215.14", None),
        ("2606:4700::1111", None),
    ])
    def test_default(self, address: str, why: str | None) -> None:
        """Refused: metadata, link-local, private, non-unicast; allowed: loopback, public."""
        assert DEFAULT.refusal(ipaddress.ip_address(address)) == why

    def test_opt_ins(self) -> None:
        """allow_private, allow_loopback: false and allow_networks each change one answer."""
        private = AddressPolicy.of(allow_private=True)
        assert private.refusal(ipaddress.ip_address("10.1.2.3")) is None
        assert private.refusal(ipaddress.ip_address("169.254.10.1")) == "a link-local address"
        no_loop = AddressPolicy.of(allow_loopback=False)
        assert no_loop.refusal(ipaddress.ip_address("127.0.0.1")) == "a loopback address"
        listed = AddressPolicy.of(allow_networks=["10.9.0.0/16", "169.254.0.0/16"])
        assert listed.refusal(ipaddress.ip_address("10.9.1.1")) is None
        assert listed.refusal(ipaddress.ip_address("10.8.1.1")) == "a private address"
        assert listed.refusal(ipaddress.ip_address("169.254.10.1")) is None

    def test_metadata_needs_its_own_entry(self) -> None:
        """A link-local range does not open the metadata address; its /32 does."""
        broad = AddressPolicy.of(allow_networks=["169.254.0.0/16"])
        assert broad.refusal(ipaddress.ip_address("169.254.169.254")) == \
            "a cloud metadata address"
        exact = AddressPolicy.of(allow_networks=["169.254.169.254/32"])
        assert exact.refusal(ipaddress.ip_address("169.254.169.254")) is None

    def test_bad_network(self) -> None:
        """An allow_networks entry that is no network: a ValueError naming it."""
        with pytest.raises(ValueError, match="allow_networks: 'intranet' is not a network"):
            AddressPolicy.of(allow_networks=["intranet"])

    async def test_every_address_is_checked(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A name with a public and a metadata record is refused, whatever the order."""
        fake_resolver(monkeypatch, {"mixed.example": ["93.184.215.14", "169.254.169.254"],
                                    "public.example": ["93.184.215.14"]})
        with pytest.raises(AddressRefused) as info:
            await DEFAULT.resolve("mixed.example", 80)
        assert str(info.value) == ("mixed.example (169.254.169.254) is a cloud metadata "
                                   "address: refused (allow_networks opts it in)")
        assert await DEFAULT.resolve("public.example", 80) == ["93.184.215.14"]

    async def test_metadata_name(self) -> None:
        """metadata.google.internal is refused by name, before any lookup."""
        with pytest.raises(AddressRefused, match="a cloud metadata name"):
            await DEFAULT.resolve("metadata.google.internal", 80)


class TestActions:
    """The http action and the sinks refuse what the policy refuses, permanently."""

    async def test_metadata_url_at_config_time(self) -> None:
        """An IP-literal metadata URL is refused when the config is checked."""
        with pytest.raises(AddressRefused, match=METADATA_REFUSED):
            await http_action(url="http://169.254.169.254/latest/meta-data/")
        sink = SlackSink()
        await sink.init(msgspec.convert({"url": "http://metadata.google.internal/x"},
                                        HttpConfig))
        with pytest.raises(AddressRefused, match="cloud metadata name"):
            sink.validate_config()

    async def test_resolved_name_refused_at_send(self, target: Target) -> None:
        """localhost resolves to loopback; with allow_loopback: false the POST never leaves."""
        action = await http_action(url=f"http://localhost:{target.port}/hook",
                                   allow_loopback=False)
        try:
            with pytest.raises(ActionError) as info:
                await action.execute(trigger())
        finally:
            await action.close()
        assert info.value.permanent
        assert re.search(r"localhost \((127\.0\.0\.1|::1)\) is a loopback address: refused",
                         info.value.error), info.value.error
        assert target.hits == []

    async def test_loopback_allowed_by_default(self, target: Target) -> None:
        """By default a loopback URL works (local development, the tests)."""
        action = await http_action(url=f"http://localhost:{target.port}/hook")
        try:
            await action.execute(trigger())
        finally:
            await action.close()
        assert target.hits == ["/hook"]


    async def test_through_a_proxy(self, target: Target,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
        """With HTTP_PROXY the target name is checked before the proxy is asked."""
        proxy = ProxyServer()
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        refused = await http_action(url=f"http://localhost:{target.port}/no",
                                    allow_loopback=False)
        allowed = await http_action(url=f"http://localhost:{target.port}/yes")
        try:
            with pytest.raises(ActionError, match="is a loopback address: refused"):
                await refused.execute(trigger())
            await allowed.execute(trigger())
        finally:
            await refused.close()
            await allowed.close()
            proxy.stop()
        assert proxy.relayed == [f"http://localhost:{target.port}/yes"]


class TestOperatorOnly:
    """A rule cannot widen where the worker connects; the operator's config can."""

    async def test_rule_may_not_opt_in(self, target: Target) -> None:
        """allow_private in a rule's action config: a permanent failure, nothing sent."""
        host = PluginHost(registry_of(), {"http": PluginSettings(
            config={"url": f"{target.url}/h", "allow_networks": ["10.0.0.0/8"]})})
        await host.start()
        try:
            with pytest.raises(ActionError) as info:
                await host.run(ActionRef(plugin="http", config={
                    "url": "http://10.0.0.1/", "allow_private": True}), trigger())
            assert info.value.permanent
            assert "may not set allow_private (only the plugins: section" in info.value.error
            await host.run(ActionRef(plugin="http", config={"headers": {"X-Rule": "own"}}),
                           trigger())  # other keys stay the rule's to set
        finally:
            await host.close()
        assert target.hits == ["/h"]


class TestGuard:
    """The guard is on the real connection (so redirects and every lookup pass through it)."""

    async def test_refusal_is_the_guards(self, target: Target) -> None:
        """0.0.0.0 reaches the loopback server on Linux without a policy; with one it does not."""
        url = f"http://0.0.0.0:{target.port}/any"
        plain = LazyClient(5.0)
        guarded = LazyClient(5.0, policy=DEFAULT)
        try:
            assert (await plain.get().get(url)).status_code == 200
            with pytest.raises(AddressRefused, match=re.escape("0.0.0.0 is not a unicast address")):
                await guarded.get().get(url)
        finally:
            await plain.aclose()
            await guarded.aclose()
        assert target.hits == ["/any"]

    async def test_redirect_target_checked(self, target: Target) -> None:
        """A followed redirect to the metadata address is refused at its connect."""
        client = LazyClient(5.0, follow_redirects=True, policy=DEFAULT)
        try:
            with pytest.raises(AddressRefused, match=METADATA_REFUSED):
                await client.get().get(f"{target.url}/redirect?to=http://169.254.169.254/")
        finally:
            await client.aclose()
        assert target.hits == ["/redirect?to=http://169.254.169.254/"]

    async def test_redirects_not_followed_by_default(self, target: Target) -> None:
        """The http action does not follow a redirect: a 3xx is a (retried) failure."""
        action = await http_action(url=f"{target.url}/redirect?to=http://169.254.169.254/")
        try:
            with pytest.raises(ActionError, match="HTTP 302"):
                await action.execute(trigger())
        finally:
            await action.close()
        assert len(target.hits) == 1
