"""The Silences page's seam, and the store behind it: ``flarebus.silences`` over its bucket.

The page depends only on the ``SilenceStore`` Protocol (a test or an embedding
application may hand its own to ``create_app(silences=...)``); the console
itself uses ``KvSilenceStore``, the same KV bucket ``flarebus silence`` and the
workers use, and a watch on it makes the page live when a silence is added
from anywhere. Matchers are Alertmanager's (``=``, ``!=``, ``=~``, ``!~``),
shown and typed as text (``host=~"web-.*"``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from nats.js.kv import KeyValue

from flarebus.kvwatch import BucketWatch
from flarebus.labelmatch import parse_matcher
from flarebus.silences import add_silence, expire_silence, list_silences, new_silence


@runtime_checkable
class SilenceView(Protocol):
    """What the page shows of one silence."""

    @property
    def id(self) -> str: ...

    @property
    def matchers(self) -> Sequence[str]: ...

    @property
    def state(self) -> str: ...

    @property
    def comment(self) -> str: ...

    @property
    def created_by(self) -> str: ...

    @property
    def starts_at(self) -> float: ...

    @property
    def ends_at(self) -> float: ...


class SilenceStore(Protocol):
    """List, create and expire silences (the console's writes need its token)."""

    async def list(self) -> Sequence[SilenceView]: ...

    async def add(self, matchers: Sequence[str], duration: float, comment: str,
                  created_by: str) -> str:
        """Create a silence for ``duration`` seconds from now (matchers as text); its id.

        ValueError (a matcher that does not parse) or SilenceError (one that would
        mute everything) for the page to show."""
        ...

    async def expire(self, silence_id: str) -> None: ...


@dataclass(frozen=True)
class SilenceRow:
    """One silence as the page shows it."""

    id: str
    matchers: Sequence[str]
    comment: str
    created_by: str
    starts_at: float
    ends_at: float
    state: str


class KvSilenceStore:
    """The console's silences: the ``FLAREBUS_SILENCES`` bucket, through ``flarebus.silences``."""

    def __init__(self, kv: KeyValue, on_change: Callable[[], None] = lambda: None) -> None:
        self.kv = kv
        self._watch = BucketWatch(kv, lambda _key, _value: on_change(),
                                  lambda _key: on_change())

    async def start(self) -> KvSilenceStore:
        await self._watch.start()
        return self

    async def close(self) -> None:
        await self._watch.close()

    async def list(self) -> list[SilenceRow]:
        now = time.time()
        return [SilenceRow(s.id, [m.text for m in s.matchers], s.comment, s.created_by,
                           s.starts_at, s.ends_at, s.state(now))
                for s in await list_silences(self.kv, now=now)]

    async def add(self, matchers: Sequence[str], duration: float, comment: str,
                  created_by: str) -> str:
        silence = new_silence([parse_matcher(text) for text in matchers], duration,
                              comment=comment, created_by=created_by)
        return await add_silence(self.kv, silence)

    async def expire(self, silence_id: str) -> None:
        await expire_silence(self.kv, silence_id)
