"""Which addresses an outbound HTTP action may connect to, decided after DNS resolution.

A rule author writes the URL of an ``http``/``webhook``/``slack`` action, so
without a check the worker would POST wherever that URL points: a cloud
metadata service (169.254.169.254 hands out the machine's credentials), a
link-local device, an internal admin API. Checking the URL's text is not
enough (``http://169.254.169.254.nip.io/``, a name whose DNS record changes
between check and connect), so the check is on the resolved addresses, every
one of them, and the connection is then made to an address that passed
(``flarebus.http`` pins it: no second lookup an attacker could answer).

The policy, per action instance (``AddressPolicy``):

- always refused: link-local (169.254.0.0/16, fe80::/10), the cloud metadata
  addresses (169.254.169.254, fd00:ec2::254, metadata.google.internal),
  unspecified (0.0.0.0, ::), multicast, broadcast and reserved addresses;
- refused unless ``allow_private``: private networks (10/8, 172.16/12,
  192.168/16, 100.64/10, fc00::/7);
- allowed unless ``allow_loopback`` is false: loopback (local development, a
  relay beside the worker, the tests);
- ``allow_networks`` (CIDRs) opts any of these in explicitly; a metadata address
  only when the entry is that one address (``169.254.169.254/32``), so opening
  a link-local range does not open the metadata service with it.

An IPv4-mapped IPv6 address (``::ffff:169.254.169.254``) is judged as the IPv4
address it maps.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"),
                                ipaddress.ip_address("fd00:ec2::254")})
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
#: private networks, beyond what ipaddress calls private (it counts loopback and link-local)
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
#: "this network" and the broadcast address, which ipaddress calls neither reserved nor multicast
_NOT_UNICAST = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "255.255.255.255/32"))


class AddressRefused(ValueError):
    """A URL's host is, or resolves to, an address the policy refuses; says which and why."""

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host, self.address, self.why = host, address, why
        where = host if host == address else f"{host} ({address})"
        super().__init__(f"{where} is {why}: refused (allow_networks opts it in)")


def network(text: str) -> IPNetwork:
    """A CIDR or a single address of ``allow_networks``; ValueError naming it otherwise."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"allow_networks: {text!r} is not a network (e.g. 10.0.0.0/8) "
                         "or an address") from None


@dataclass(frozen=True)
class AddressPolicy:
    """Where connections may go (see the module docstring)."""

    allow_private: bool = False
    allow_loopback: bool = True
    allow_networks: tuple[IPNetwork, ...] = field(default=())

    @classmethod
    def of(cls, *, allow_private: bool = False, allow_loopback: bool = True,
           allow_networks: Sequence[str] = ()) -> AddressPolicy:
        return cls(allow_private, allow_loopback, tuple(network(n) for n in allow_networks))

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused (``link-local``, ...), None when it is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        listed = [n for n in self.allow_networks if address.version == n.version
                  and address in n]
        if address in METADATA_ADDRESSES:
            exact = any(n.num_addresses == 1 for n in listed)
            return None if exact else "a cloud metadata address"
        if listed:
            return None
        if address.is_loopback:
            return None if self.allow_loopback else "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_unspecified or address.is_multicast or address.is_reserved or any(
                address.version == n.version and address in n for n in _NOT_UNICAST):
            return "not a unicast address"
        if any(address.version == n.version and address in n for n in _PRIVATE):
            return None if self.allow_private else "a private address"
        return None

    def check_address(self, host: str, address: str) -> None:
        why = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if why is not None:
            raise AddressRefused(host, address, why)

    def check_name(self, host: str) -> IPAddress | None:
        """Refuse a metadata name outright; the address when ``host`` is an IP literal."""
        name = host.lower().rstrip(".").strip("[]")
        if name in METADATA_NAMES:
            raise AddressRefused(host, host, "a cloud metadata name")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return None
        self.check_address(host, str(address))
        return address

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, once every one of them is allowed.

        Every address, not the first: a name with one public and one metadata
        record would otherwise pass or fail by the order of the answer.
        """
        literal = self.check_name(host)
        if literal is not None:
            return [str(literal)]
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            self.check_address(host, address)
        return addresses
