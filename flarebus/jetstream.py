"""Every stream and KV bucket flarebus uses, made with the configured ``jetstream:`` settings.

One place so that every role, and every new bucket, gets the same treatment:

- missing: created with the settings (``replicas`` from ``jetstream.replicas``);
- present with other settings: each difference is logged as a warning (setting,
  existing value, wanted value) and the stream is updated in place, which
  JetStream allows for replicas, limits and the duplicate window. A difference it
  refuses (storage type, a replica count larger than the cluster) is a
  StreamSettingsError naming it: a stream is never silently used as it is;
- ``settings=None`` is for readers (``flarebus tail``, ``status``): they use what
  exists as it is, and create it with the defaults only if it is missing, so a
  command run without the cluster's config cannot change its replication.

A KV bucket is the stream ``KV_<bucket>``; its history and TTL are the stream's
``max_msgs_per_subject`` and ``max_age``. Adding a bucket is one call::

    kv = await jetstream.bucket(js, config.jetstream, "FLAREBUS_LEASES",
                                description="engine partition leases", ttl=10.0)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from flarebus.config import JetStreamSettings
from flarebus.errors import Mismatch, StreamSettingsError

log = logging.getLogger("flarebus.jetstream")

#: The stream settings flarebus sets and keeps in line, with the names users know them by.
SETTINGS = {"num_replicas": "replicas", "subjects": "subjects", "storage": "storage",
            "retention": "retention", "discard": "discard", "max_age": "max_age",
            "max_bytes": "max_bytes", "max_msgs_per_subject": "history",
            "duplicate_window": "duplicate_window"}
#: JetStream's error code for "stream name already in use" (made meanwhile by another process).
ALREADY_IN_USE = 10058
#: What the server reports for a limit nobody set.
_UNSET: dict[str, Any] = {"max_age": 0.0, "max_bytes": -1, "max_msgs_per_subject": -1}


def kv_stream(bucket: str) -> str:
    """The stream that holds a KV bucket."""
    return f"KV_{bucket}"


def _plain(value: Any) -> Any:
    """A setting's value as it reads in a log line: an enum's value, 7 days not 604800.0."""
    value = getattr(value, "value", value)
    return int(value) if isinstance(value, float) and value.is_integer() else value


def differences(existing: StreamConfig, wanted: Mapping[str, Any]) -> list[Mismatch]:
    """The settings ``wanted`` (StreamConfig field: value) sets that ``existing`` has otherwise.

    A value None means "whatever the server chose" and is not compared.
    """
    out = []
    for field, name in SETTINGS.items():
        want = wanted.get(field)
        if want is None:
            continue
        have = getattr(existing, field)
        have = _UNSET.get(field, have) if have is None else have
        if _plain(have) != _plain(want):
            out.append(Mismatch(name, _plain(have), _plain(want)))
    return out


def _hint(settings: JetStreamSettings | None, refusal: str) -> str:
    """What to check when JetStream refused for want of servers to place the replicas on."""
    wants_servers = "replica" in refusal.lower() or "insufficient resources" in refusal.lower()
    if settings is None or settings.replicas == 1 or not wants_servers:
        return ""
    return (f" (jetstream.replicas is {settings.replicas}: it needs a cluster of at least "
            f"{settings.replicas} JetStream servers)")


async def _reconcile(js: JetStreamContext, info: StreamInfo, wanted: Mapping[str, Any],
                     resource: str, settings: JetStreamSettings) -> StreamInfo:
    mismatches = differences(info.config, wanted)
    if not mismatches:
        return info
    for m in mismatches:
        log.warning("%s: %s; updating it", resource, m)
    changes = {f: wanted[f] for f, name in SETTINGS.items()
               if name in {m.setting for m in mismatches}}
    try:
        return await js.update_stream(dataclasses.replace(info.config, **changes))
    except APIError as exc:
        raise StreamSettingsError(resource, f"JetStream refused the update: {exc.description}"
                                  f"{_hint(settings, exc.description or '')}",
                                  mismatches) from None


async def _ensure(js: JetStreamContext, name: str, resource: str, wanted: Mapping[str, Any],
                  settings: JetStreamSettings | None,
                  create: Callable[[], Awaitable[object]]) -> StreamInfo | None:
    """The existing stream brought in line, or None after ``create()`` made it."""
    try:
        info = await js.stream_info(name)
    except NotFoundError:
        try:
            await create()
            return None
        except ServiceUnavailableError:
            raise  # no JetStream at all: bus.ensure_jetstream says so
        except APIError as exc:
            if exc.err_code != ALREADY_IN_USE:
                raise StreamSettingsError(resource, f"JetStream refused to create it: "
                                          f"{exc.description}"
                                          f"{_hint(settings, exc.description or '')}") from None
        info = await js.stream_info(name)
    if settings is None:
        return info
    return await _reconcile(js, info, wanted, resource, settings)


async def stream(js: JetStreamContext, settings: JetStreamSettings | None,
                 config: StreamConfig) -> None:
    """Make sure the stream ``config`` describes exists, with ``settings.replicas``."""
    name = config.name
    assert name is not None
    if settings is not None:
        config = dataclasses.replace(config, num_replicas=settings.replicas)
    wanted = {field: getattr(config, field) for field in SETTINGS}
    await _ensure(js, name, f"stream {name}", wanted, settings, lambda: js.add_stream(config))


async def bucket(js: JetStreamContext, settings: JetStreamSettings | None, name: str, *,
                 description: str, history: int = 1, ttl: float | None = None,
                 storage: StorageType = StorageType.FILE) -> KeyValue:
    """The KV bucket ``name``, created or brought in line with these settings."""
    replicas = settings.replicas if settings is not None else 1
    config = KeyValueConfig(bucket=name, description=description, history=history, ttl=ttl,
                            storage=storage, replicas=replicas)
    wanted = {"num_replicas": replicas, "max_msgs_per_subject": history,
              "max_age": ttl or 0.0, "storage": storage}
    await _ensure(js, kv_stream(name), f"bucket {name}", wanted, settings,
                  lambda: js.create_key_value(config))
    return await js.key_value(name)
