"""``http``: POST the trigger JSON to a URL; success only on a 2xx answer.

The URL is ``config.url``, else ``HTTP_PLUGIN_ENDPOINT``. With ``secret``,
the body is signed with HMAC-SHA256 and the signature sent as
``<signature_header>: sha256=<hex>`` (GitHub's webhook convention), so the
receiver can verify the trigger came from flarebus. ``allow_hosts`` limits
where rule authors may send triggers (redirects are not followed, so it holds).
Whatever the host, the address it resolves to must pass the address policy
(``flarebus.addresses``: link-local and metadata addresses refused, private ones
unless ``allow_private``, loopback unless ``allow_loopback: false``, any network
opted in by ``allow_networks``); a refused address is a permanent failure.
Those four keys are ``operator_only``: a rule's own action config may not set
them (the worker refuses the trigger's action), so a rule author cannot widen
where the worker connects.
A 4xx answer other than 408/425/429 is a permanent failure (dead-lettered at
once: retrying an unauthorized or bad request cannot help); 5xx, 3xx, 408, 425,
429, timeouts and connection errors retry.

Each instance keeps one httpx client (``flarebus.http.LazyClient``), so the
triggers of one action instance share a kept-alive connection, and proxies
come from the environment. ``timeout`` bounds the whole request (connect,
send, answer), as it always did, not each step.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

import msgspec

from flarebus.addresses import AddressPolicy
from flarebus.errors import ActionError
from flarebus.events import Trigger, encoder
from flarebus.grouping import TriggerGroup
from flarebus.http import (
    LazyClient,
    Refused,
    RequestFailed,
    RequestTimeout,
    Response,
    check_headers,
    check_url,
    failure_reason,
    read_capped,
)
from flarebus.plugin import Action, Sink

SIGNATURE_HEADER = "X-Flarebus-Signature"
RETRYABLE_4XX = {408, 425, 429}


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True):
    url: str | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    headers: dict[str, str] = {}
    secret: str | None = None
    signature_header: str = SIGNATURE_HEADER
    allow_hosts: list[str] | None = None
    allow_private: bool = False
    allow_loopback: bool = True
    allow_networks: list[str] = []


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HttpPoster:
    """What the http action and the webhook sinks share: URL, headers, signing, status check."""

    name: ClassVar[str]
    config: Any
    #: where the plugin may connect is the operator's to widen, not a rule's (actions.host)
    operator_only: ClassVar[frozenset[str]] = frozenset(
        {"allow_hosts", "allow_private", "allow_loopback", "allow_networks"})

    def setup(self, config: HttpConfig) -> None:
        self.config = config
        self.url = config.url or os.environ.get("HTTP_PLUGIN_ENDPOINT") or None
        self.policy = AddressPolicy.of(allow_private=config.allow_private,
                                       allow_loopback=config.allow_loopback,
                                       allow_networks=config.allow_networks)
        self.http = LazyClient(config.timeout, {"Content-Type": "application/json"},
                               config.headers, policy=self.policy)

    def check(self) -> None:
        if self.url is not None:
            check_url(self.url, self.config.allow_hosts)
            self.policy.check_name(urlsplit(self.url).hostname or "")  # an IP or metadata name
        check_headers(self.config.headers)

    async def close(self) -> None:
        await self.close_client()

    async def close_client(self) -> None:
        """Close the kept-alive connections (a later send opens new ones)."""
        http: LazyClient | None = getattr(self, "http", None)
        if http is not None:
            await http.aclose()

    async def send(self, body: bytes) -> None:
        if self.url is None:
            raise ActionError(self.name, "no url: set config.url or HTTP_PLUGIN_ENDPOINT",
                              permanent=True)
        try:
            check_url(self.url, self.config.allow_hosts)
        except ValueError as exc:
            raise ActionError(self.name, str(exc), permanent=True) from None
        headers = {}
        if self.config.secret:
            headers[self.config.signature_header] = sign(self.config.secret, body)
        try:
            response = await self.post(self.url, body, headers)
        except Refused as exc:
            raise ActionError(self.name, f"POST {self.url}: {exc}", permanent=True) from None
        except (TimeoutError, RequestTimeout):
            raise ActionError(self.name, f"POST {self.url}: no answer within "
                                         f"{self.config.timeout:g}s") from None
        except RequestFailed as exc:
            raise ActionError(self.name, f"POST {self.url}: {failure_reason(exc, self.url)}"
                              ) from None
        if not response.is_success:
            status = response.status_code
            permanent = 400 <= status < 500 and status not in RETRYABLE_4XX
            raise ActionError(self.name, f"POST {self.url}: HTTP {status} "
                                         f"{response.reason_phrase}".rstrip(), permanent=permanent)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        """POST within ``timeout`` overall; the body is read (capped) so the connection is kept."""
        async with asyncio.timeout(self.config.timeout):
            await self.http.check(url)
            client = self.http.get()
            async with client.stream("POST", url, content=body, headers=headers) as response:
                await read_capped(response)
                return response


class HttpAction(HttpPoster, Action):
    """POSTs the trigger, exactly as on the wire, as ``application/json``."""

    name = "http"
    config_schema = HttpConfig

    async def init(self, config: HttpConfig) -> None:
        self.setup(config)

    def validate_config(self) -> None:
        self.check()

    async def execute(self, trigger: Trigger) -> None:
        await self.send(encoder.encode(trigger))

    async def execute_group(self, group: TriggerGroup) -> None:
        """A group notification: the TriggerGroup as JSON (its triggers as on the wire)."""
        await self.send(encoder.encode(group))


class HttpSink(HttpPoster, Sink):
    """A sink that POSTs a JSON body built from (rule_name, msg)."""

    config_schema = HttpConfig

    async def init(self, config: HttpConfig) -> None:
        self.setup(config)

    def validate_config(self) -> None:
        self.check()

    def body(self, rule_name: str, msg: str) -> dict[str, Any]:
        raise NotImplementedError

    async def notify(self, rule_name: str, msg: str) -> None:
        await self.send(encoder.encode(self.body(rule_name, msg)))
