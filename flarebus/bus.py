"""The NATS connection every role uses, and the JetStream resources they share.

Subjects (the wire contract between the roles; schemas/ describes each message):

- ``metrics.<name>``       MetricSample, or a JSON array of them
- ``stacks.<source>``      StackSample, or a JSON array of them
- ``triggers.<rule>``      Trigger, in stream FLAREBUS_TRIGGERS (dedup by Nats-Msg-Id)
- ``triggers.dead.<rule>`` dead-lettered triggers, same stream; workers filter ``triggers.*``
- ``triggers.suppressed.<rule>`` triggers the gate did not run (silenced, inhibited,
  rate-limited), the verdict in header ``Flarebus-Verdict``; same stream
- ``flarebus.invalid``     rejected input, the reason in header ``Flarebus-Reason``
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoServersError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import ServiceUnavailableError
from nats.js.kv import KeyValue

from flarebus import jetstream, natsfail
from flarebus.backoff import Backoff
from flarebus.config import JetStreamSettings, NatsSettings
from flarebus.errors import BusError, describe
from flarebus.ingest_settings import IngestSettings

log = logging.getLogger("flarebus.bus")

TRIGGERS_STREAM = "FLAREBUS_TRIGGERS"
TRIGGER_SUBJECT_PREFIX = "triggers"
TRIGGERS_SUBJECTS = "triggers.>"
#: What workers consume: one token after ``triggers.``, so dead letters are not redelivered.
TRIGGERS_FILTER = "triggers.*"
DEAD_LETTER_PREFIX = "triggers.dead"
SUPPRESSED_PREFIX = "triggers.suppressed"
INVALID_SUBJECT = "flarebus.invalid"
REASON_HEADER = "Flarebus-Reason"
#: On ``triggers.suppressed.<rule>``: silenced, inhibited or rate-limited (why: REASON_HEADER).
VERDICT_HEADER = "Flarebus-Verdict"
MSG_ID_HEADER = "Nats-Msg-Id"

ENGINE_STATE_BUCKET = "FLAREBUS_ENGINE_STATE"
ENGINE_LEASES_BUCKET = "FLAREBUS_ENGINE_LEASES"
ACTIONS_DONE_BUCKET = "FLAREBUS_ACTIONS_DONE"
ACTIONS_DONE_TTL = 24 * 3600.0
GROUPS_BUCKET = "FLAREBUS_GROUPS"
#: Waiting for a server that is not up yet (``connect(retry_initial=True)``).
CONNECT_BACKOFF = Backoff(0.2, 10.0)
#: Tries of a long-running role before a permanent failure (bad credentials or TLS) ends it.
PERMANENT_TRIES = 3


def trigger_subject(rule: str) -> str:
    return f"{TRIGGER_SUBJECT_PREFIX}.{rule}"


def dead_letter_subject(rule: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{rule}"


def suppressed_subject(rule: str) -> str:
    return f"{SUPPRESSED_PREFIX}.{rule}"


def _tls_context(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    context = ssl.create_default_context(cafile=settings.tls_ca)
    if settings.tls_cert:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def connect_options(settings: NatsSettings) -> dict[str, Any]:
    """nats-py ``connect()`` keyword arguments for these settings (no callbacks)."""
    options: dict[str, Any] = {
        "servers": settings.servers,
        "name": settings.name,
        "connect_timeout": settings.connect_timeout,
        "reconnect_time_wait": settings.reconnect_wait,
        "max_reconnect_attempts": -1,  # forever: a service must outlive a server restart
        "allow_reconnect": True,
    }
    if settings.user:
        options["user"] = settings.user
        options["password"] = settings.password or ""
    if settings.token:
        options["token"] = settings.token
    if settings.nkey_seed:
        options["nkeys_seed"] = settings.nkey_seed
    if settings.creds:
        options["user_credentials"] = settings.creds
    tls = _tls_context(settings)
    if tls is not None:
        options["tls"] = tls
        options["tls_handshake_first"] = settings.tls_handshake_first
    return options


async def connect(settings: NatsSettings, *, retry_initial: bool = False,
                  on_reconnect: Callable[[], Awaitable[None]] | None = None,
                  on_disconnect: Callable[[], Awaitable[None]] | None = None,
                  **extra: Any) -> Client:
    """Connect to NATS; log every disconnect and reconnect.

    With ``retry_initial``, a server that is not up yet is waited for with
    backoff instead of failing (services started before their server). A
    permanent failure (credentials refused, TLS handshake failed: see
    ``flarebus.natsfail``) is a BusError at once without ``retry_initial``,
    and after ``PERMANENT_TRIES`` tries with it (a server restarting with new
    certificates or users gets a moment, a wrong token does not get forever).
    """
    natsfail.check_credentials(settings)
    causes: list[BaseException] = []
    refused = asyncio.Event()
    user_error_cb = extra.pop("error_cb", None)

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("disconnected from NATS; reconnecting")
            if on_disconnect is not None:
                await on_disconnect()

    async def reconnected() -> None:
        log.warning("reconnected to NATS at %s", nc.connected_url.netloc
                    if nc.connected_url else "?")
        if on_reconnect is not None:
            await on_reconnect()

    async def error(exc: Exception) -> None:
        if not nc.is_connected and not nc.is_reconnecting:  # still the first connect
            causes.append(exc)
            if natsfail.is_permanent(exc):
                refused.set()  # nats-py would retry a TLS failure forever
            return
        log.warning("NATS: %s", describe(exc))
        if user_error_cb is not None:
            await user_error_cb(exc)

    options = connect_options(settings) | {
        "disconnected_cb": disconnected, "reconnected_cb": reconnected, "error_cb": error,
    } | extra
    forever = options["max_reconnect_attempts"]
    # nats-py applies max_reconnect_attempts to the first connect too; "forever" there
    # would hang a one-shot command on a dead URL. Try each server once, then reconnect
    # forever once connected.
    options["max_reconnect_attempts"] = 1
    #: each server once, with its TLS handshake and CONNECT: a bound nats-py lacks for TLS
    deadline = (settings.connect_timeout + 1.0) * 2 * max(1, len(settings.servers))
    attempt = 0
    permanent_tries = 0
    while True:
        attempt += 1
        causes.clear()
        refused.clear()
        nc = Client()
        try:
            await _first_connect(nc, options, refused, deadline)
            if natsfail.wants_tls(settings) and natsfail.is_plaintext(nc):
                await nc.close()
                raise natsfail.plaintext_refused(settings)
            nc.options["max_reconnect_attempts"] = forever
            return nc
        except (TimeoutError, NoServersError, OSError, NatsError) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            failure = natsfail.explain(settings, causes, exc)
            permanent_tries += failure.permanent
            if not retry_initial or permanent_tries >= PERMANENT_TRIES:
                raise failure from None
            delay = CONNECT_BACKOFF.delay(attempt)
            log.warning("%s; retrying in %.1fs", failure, delay)
            await asyncio.sleep(delay)


async def _first_connect(nc: Client, options: dict[str, Any], refused: asyncio.Event,
                         deadline: float) -> None:
    """``nc.connect``, ended early by a permanent failure (``refused``) or the deadline.

    Cancelled itself (a stop request while waiting for the server), it cancels the
    connect too: no client is left connecting in the background.
    """
    connecting = asyncio.ensure_future(nc.connect(**options))
    waiting = asyncio.ensure_future(refused.wait())
    try:
        done, _ = await asyncio.wait([connecting, waiting], timeout=deadline,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.wait([connecting])  # its end, without raising its CancelledError
    if connecting in done:
        connecting.result()
        return
    if not connecting.cancelled():
        connecting.exception()  # retrieved: superseded by the reason below
    raise NoServersError if refused.is_set() else TimeoutError()


async def ensure_triggers_stream(js: JetStreamContext,
                                 settings: JetStreamSettings | None = None) -> None:
    """The stream all triggers (and dead letters) go to: file storage, dedup by trigger id.

    ``settings`` None: use the stream as it is (see flarebus.jetstream).
    """
    s = settings or JetStreamSettings()
    await jetstream.stream(js, settings, StreamConfig(
        name=TRIGGERS_STREAM,
        description="flarebus triggers (triggers.<rule>) and dead letters (triggers.dead.<rule>)",
        subjects=[TRIGGERS_SUBJECTS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=s.triggers_max_age,
        max_bytes=s.triggers_max_bytes,
        duplicate_window=s.duplicate_window,
    ))


async def ensure_samples_stream(js: JetStreamContext, settings: IngestSettings,
                                subjects: list[str],
                                replication: JetStreamSettings | None = None) -> None:
    """The stream durable ingest reads: the sample subjects, bounded by age and size
    (``engine.ingest``), replicated like every stream (``jetstream.replicas``)."""
    await jetstream.stream(js, replication, StreamConfig(
        name=settings.stream,
        description="flarebus samples for durable ingest and `flarebus replay --stream`",
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.max_age,
        max_bytes=settings.max_bytes,
    ))


async def engine_state_bucket(js: JetStreamContext,
                              settings: JetStreamSettings | None = None) -> KeyValue:
    """The KV bucket where the engine checkpoints evaluator state."""
    return await jetstream.bucket(js, settings, ENGINE_STATE_BUCKET,
                                  description="flarebus engine state (checkpoints)")


async def engine_leases_bucket(js: JetStreamContext, settings: JetStreamSettings | None = None,
                               *, ttl: float) -> KeyValue:
    """The KV bucket of coordinated engines: live engines and partition leases, with a TTL.

    The TTL (the bucket's max age) is the lease: a key not rewritten within it
    is removed by the server, on the server's clock, which is what lets another
    engine take the partition of one that died.
    """
    return await jetstream.bucket(js, settings, ENGINE_LEASES_BUCKET, ttl=ttl,
                                  description="flarebus engine leases (coordination)")


async def actions_done_bucket(js: JetStreamContext, settings: JetStreamSettings | None = None,
                              *, ttl: float = ACTIONS_DONE_TTL) -> KeyValue:
    """The KV bucket where workers record (trigger id, action) completions, with a TTL."""
    return await jetstream.bucket(js, settings, ACTIONS_DONE_BUCKET, ttl=ttl,
                                  description="flarebus completed actions (idempotency)")


async def groups_bucket(js: JetStreamContext,
                        settings: JetStreamSettings | None = None) -> KeyValue:
    """The KV bucket of alert groups: one entry per group, changed by compare-and-set."""
    return await jetstream.bucket(js, settings, GROUPS_BUCKET,
                                  description="flarebus alert groups (actions/grouping.py)")


async def ensure_jetstream(nc: Client,
                           settings: JetStreamSettings | None = None) -> JetStreamContext:
    """JetStream context with the triggers stream in place; a clear error without JetStream."""
    js = nc.jetstream()
    try:
        await ensure_triggers_stream(js, settings)
    except ServiceUnavailableError:
        raise BusError([nc.connected_url.geturl() if nc.connected_url else "?"],
                       "JetStream is not enabled (start nats-server with -js, or enable "
                       "jetstream in its config)", kind="jetstream") from None
    return js


async def close(nc: Client) -> None:
    """Drain (flush what was published, finish what was received) and close."""
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except Exception:  # already closing or the server is gone: close is what matters
        with contextlib.suppress(Exception):
            await nc.close()

