"""Silences: matchers that mute triggers for a while, kept in the JetStream KV bucket
``FLAREBUS_SILENCES`` so every worker sees a new one at once and they survive restarts.

Any role may call the small async API (``add_silence``, ``list_silences``,
``expire_silence``): the CLI does, the web console will. Workers keep a live
copy through ``SilenceWatch`` (a KV watch: a silence added anywhere reaches
every worker in milliseconds). A silence expires by itself at ``ends_at``; its
record stays (state ``expired``) for ``RETENTION`` so ``flarebus silence list``
can show what was muted, then ``list_silences`` deletes it. Expiring one early
sets ``ends_at`` to now, as Alertmanager does.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Annotated, Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from flarebus import jetstream
from flarebus.config import JetStreamSettings
from flarebus.errors import SilenceError
from flarebus.kvwatch import BucketWatch
from flarebus.labelmatch import (
    LabelMatcher,
    LabelsCheck,
    compile_all,
    matches_all,
    matches_everything,
)

log = logging.getLogger("flarebus.silences")

SILENCES_BUCKET = "FLAREBUS_SILENCES"
#: How long an expired silence is kept for ``list`` before it is deleted.
RETENTION = 24 * 3600.0

SilenceState = Literal["pending", "active", "expired"]


class Silence(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Triggers matching every matcher run no action from ``starts_at`` until ``ends_at``."""

    id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+$")]
    matchers: Annotated[list[LabelMatcher], msgspec.Meta(min_length=1)]
    starts_at: float
    ends_at: float
    created_by: str = ""
    comment: str = ""
    updated_at: float = 0.0

    def state(self, now: float) -> SilenceState:
        if now >= self.ends_at:
            return "expired"
        return "pending" if now < self.starts_at else "active"

    def mutes(self, labels: dict[str, str], now: float) -> bool:
        """Active at ``now`` and every matcher matches ``labels`` (see ``alert_labels``)."""
        return self.starts_at <= now < self.ends_at and matches_all(self.matchers, labels)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Silence)


async def silences_bucket(js: JetStreamContext,
                          settings: JetStreamSettings | None = None) -> KeyValue:
    """The bucket (created when missing): key = silence id, value = a Silence as JSON."""
    return await jetstream.bucket(js, settings, SILENCES_BUCKET,
                                  description="flarebus silences (flarebus silence add)")


def new_silence(matchers: Iterable[LabelMatcher], duration: float, *, comment: str = "",
                created_by: str = "", starts_at: float | None = None) -> Silence:
    """A Silence with a fresh id; SilenceError when it would mute every trigger."""
    matchers = list(matchers)
    if not matchers:
        raise SilenceError("a silence needs at least one matcher (e.g. -m host=web-1)")
    if matches_everything(matchers):
        raise SilenceError("these matchers match every trigger (each matches an empty "
                           "label); add one that names something, e.g. -m rule=high-cpu")
    if duration <= 0:
        raise SilenceError("a silence must last longer than 0s")
    now = time.time()
    start = now if starts_at is None else starts_at
    return Silence(id=str(uuid.uuid4()), matchers=matchers, starts_at=start,
                   ends_at=start + duration, created_by=created_by, comment=comment,
                   updated_at=now)


async def add_silence(kv: KeyValue, silence: Silence) -> str:
    """Store ``silence``; its id back."""
    await kv.put(silence.id, _encoder.encode(silence))
    return silence.id


async def list_silences(kv: KeyValue, *, now: float | None = None) -> list[Silence]:
    """Every silence not past its retention, newest end first; older ones are deleted."""
    now = time.time() if now is None else now
    out = []
    for silence in await _read_all(kv):
        if now - silence.ends_at > RETENTION:
            with contextlib.suppress(Exception):
                await kv.delete(silence.id)
            continue
        out.append(silence)
    return sorted(out, key=lambda s: -s.ends_at)


async def get_silence(kv: KeyValue, silence_id: str) -> Silence:
    try:
        entry = await kv.get(silence_id)
    except NotFoundError:
        raise SilenceError(f"no silence {silence_id!r} (see flarebus silence list)",
                           silence_id) from None
    except Exception as exc:  # an id that is not a valid key (spaces, '*')
        raise SilenceError(f"no silence {silence_id!r} ({exc})", silence_id) from None
    return _decoder.decode(entry.value or b"")


async def expire_silence(kv: KeyValue, silence_id: str, *, now: float | None = None) -> Silence:
    """End ``silence_id`` now; the expired Silence back. SilenceError if unknown or over."""
    now = time.time() if now is None else now
    silence = await get_silence(kv, silence_id)
    if silence.state(now) == "expired":
        raise SilenceError(f"silence {silence_id} already expired", silence_id)
    expired = msgspec.structs.replace(silence, ends_at=now, updated_at=now)
    await kv.put(silence_id, _encoder.encode(expired))
    return expired


async def _read_all(kv: KeyValue) -> list[Silence]:
    watcher = await kv.watchall()
    found: list[Silence] = []
    try:
        async for entry in watcher:
            if entry is None:  # the marker: everything stored has been delivered
                break
            if entry.operation not in (KV_DEL, KV_PURGE) and entry.value:
                silence = _decode(entry.key, entry.value)
                if silence is not None:
                    found.append(silence)
            if entry.delta == 0:
                break
    finally:
        await watcher.stop()
    return found


def _decode(key: str, value: bytes) -> Silence | None:
    try:
        return _decoder.decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("silence %s is not a valid silence, ignored: %s", key, exc)
        return None


_Check = tuple[float, float, LabelsCheck]


def _first(checks: dict[str, _Check] | None, labels: dict[str, str], now: float) -> str | None:
    for key, (starts, ends, check) in (checks or {}).items():
        if starts <= now < ends and check(labels):
            return key
    return None


class SilenceWatch:
    """A live copy of the bucket: ``silences`` updated as anyone adds or expires one.

    ``muting`` runs for every trigger, so each silence is kept as its span and its
    matchers compiled into one function, and a silence with an equality matcher
    (``host=web-1``, ``rule=high-cpu``: nearly all) is indexed by that label's value:
    a trigger is checked against the silences naming its own values, not all of them.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.silences: dict[str, Silence] = {}
        #: label -> value -> silence id -> check, for silences with an `=` matcher
        self._indexed: dict[str, dict[str, dict[str, _Check]]] = {}
        self._others: dict[str, _Check] = {}  # the rest, checked for every trigger
        self.watch = BucketWatch(kv, self._put, self._delete)

    def _put(self, key: str, value: bytes) -> None:
        if (silence := _decode(key, value)) is not None:
            self.add(silence)

    def add(self, silence: Silence) -> None:
        """Known from now on (the watch calls it, for every put of the bucket)."""
        self._delete(silence.id)
        self.silences[silence.id] = silence
        check = (silence.starts_at, silence.ends_at, compile_all(silence.matchers))
        equal = next((m for m in silence.matchers if m.op == "="), None)
        if equal is None:
            self._others[silence.id] = check
        else:
            self._indexed.setdefault(equal.name, {}).setdefault(equal.value, {})[
                silence.id] = check

    def _delete(self, key: str) -> None:
        silence = self.silences.pop(key, None)
        self._others.pop(key, None)
        if silence is None:
            return
        equal = next((m for m in silence.matchers if m.op == "="), None)
        if equal is not None:
            by_value = self._indexed.get(equal.name, {})
            by_value.get(equal.value, {}).pop(key, None)
            if not by_value.get(equal.value, True):
                del by_value[equal.value]
            if not by_value:
                self._indexed.pop(equal.name, None)

    async def start(self) -> None:
        await self.watch.start()

    def muting(self, labels: dict[str, str], now: float) -> Silence | None:
        """The first silence muting ``labels`` at ``now``, or None."""
        for name, by_value in self._indexed.items():
            found = _first(by_value.get(labels.get(name, "")), labels, now)
            if found is not None:
                return self.silences[found]
        found = _first(self._others, labels, now)
        return None if found is None else self.silences[found]

    async def forget_expired(self, now: float | None = None) -> None:
        """Delete silences past their retention (any process may: deleting twice is fine)."""
        now = time.time() if now is None else now
        for key, silence in list(self.silences.items()):
            if now - silence.ends_at > RETENTION:
                self._delete(key)
                with contextlib.suppress(Exception):
                    await self.watch.kv.delete(key)

    async def close(self) -> None:
        await self.watch.close()
