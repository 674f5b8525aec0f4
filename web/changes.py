"""A change counter the feeds bump and the server-sent-event streams wait on.

One counter per topic (``summaries``, ``triggers``, ``stacks``), so a page
refreshes only for what it shows; waiting is an ``asyncio.Event`` replaced at
each bump, so every waiting stream wakes once per change, and none polls.
"""

from __future__ import annotations

import asyncio
import contextlib

TOPICS = ("summaries", "triggers", "stacks", "silences")


class Changes:
    def __init__(self) -> None:
        self.version = 0
        self.at: dict[str, int] = dict.fromkeys(TOPICS, 0)
        self._event = asyncio.Event()

    def bump(self, topic: str) -> None:
        self.version += 1
        self.at[topic] = self.version
        self._event.set()
        self._event = asyncio.Event()

    def since(self, version: int) -> list[str]:
        """The topics changed after ``version``."""
        return [t for t, v in self.at.items() if v > version]

    async def wait(self, version: int, timeout: float) -> int:
        """The version once it is past ``version``, or as it is after ``timeout`` seconds."""
        if self.version <= version:
            event = self._event
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return self.version
