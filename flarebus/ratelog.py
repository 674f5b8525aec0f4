"""Rate-limited logging: loud about a problem, quiet about its ten-thousandth repeat.

A flood of bad input or slow-consumer drops must show up in the log, but one
line per message would bury everything else (and cost more than the messages).
Each key logs its first occurrence at once, then at most one summary line per
``interval`` with the count since the last line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs per key at most once per ``interval`` seconds, with the count of what was held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, count: int = 1) -> bool:
        """Record ``count`` occurrences of ``key``; log ``message`` if the key's interval passed.

        Returns True when a line was written.
        """
        now = self._clock()
        held = self._held.get(key, 0) + count
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._held[key] = held
            return False
        self._last[key] = now
        self._held[key] = 0
        suffix = f" ({held} times since the last report)" if last is not None and held > 1 else ""
        self._log.log(level, "%s%s", message, suffix)
        return True
