"""Hot reload of the rule files: on SIGHUP, and when any rule file changes.

Changes are noticed by polling the files' modification times and sizes (every
``interval`` seconds): portable, no extra dependency, and cheap for rule sets
of any realistic size. A new set is loaded and validated as a whole; one
error anywhere rejects it all, the problems are logged one per line exactly as
``flarebus check`` prints them, and the rules already running keep running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flarebus.engine.language.rulepaths import expand_paths
from flarebus.errors import InvalidFileError

log = logging.getLogger("flarebus.engine.reload")

Snapshot = dict[str, tuple[int, int]]


def snapshot(paths: Sequence[str | Path]) -> Snapshot:
    """(mtime_ns, size) of every rule file the paths name; a vanished file simply drops out."""
    files: Snapshot = {}
    for file in expand_paths(paths)[0]:
        try:
            st = file.stat()
        except OSError:  # removed since the walk
            continue
        files[str(file)] = (st.st_mtime_ns, st.st_size)
    return files


class RuleReloader:
    """Reloads on request (SIGHUP) or file change and applies only a fully valid set."""

    def __init__(self, paths: Sequence[str | Path], load: Callable[[Sequence[str | Path]], Any],
                 apply: Callable[[Any], None], *, interval: float = 1.0) -> None:
        self._paths = list(paths)
        self._load = load
        self._apply = apply
        self._interval = interval
        self._requested = asyncio.Event()
        self._seen = snapshot(self._paths)
        self.applied = 0
        self.rejected = 0

    def request(self) -> None:
        """Reload at the next opportunity (the SIGHUP handler)."""
        self._requested.set()

    async def run(self) -> None:
        """Poll for changes and serve requests until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._requested.wait(), self._interval)
                reason = "SIGHUP"
            except TimeoutError:
                reason = ""
            self._requested.clear()
            current = await asyncio.to_thread(snapshot, self._paths)
            if not reason and current == self._seen:
                continue
            reason = reason or "rule files changed"
            self._seen = current
            await self.reload(reason)

    async def reload(self, reason: str = "reload") -> bool:
        """Load the rule files; apply them if valid. False (old rules kept) if not."""
        try:
            rules = await asyncio.to_thread(self._load, self._paths)
        except InvalidFileError as exc:
            self.rejected += 1
            log.error("%s: new rules rejected (%d problems); the loaded rules keep running:",
                      reason, len(exc.problems))
            for problem in exc.problems:
                log.error("%s", problem)
            return False
        except OSError as exc:
            self.rejected += 1
            log.error("%s: cannot read the rule files (%s); the loaded rules keep running",
                      reason, exc)
            return False
        self._apply(rules)
        self.applied += 1
        return True
