"""The Silences page's seam: a small interface any silence store can be put behind.

Silences are stored by another part of flarebus (an async list/add/expire API
over a KV bucket); the console depends only on this Protocol, so it renders
"silences are not available" until an implementation is handed to
``create_app(silences=...)``, and needs no change when one is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class SilenceView(Protocol):
    """What the page shows of one silence."""

    @property
    def id(self) -> str: ...

    @property
    def matchers(self) -> Mapping[str, str]: ...

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

    async def add(self, matchers: Mapping[str, str], duration: float, comment: str,
                  created_by: str) -> str:
        """Create a silence for ``duration`` seconds from now; its id."""
        ...

    async def expire(self, silence_id: str) -> None: ...
