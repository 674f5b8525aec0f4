"""The latest window of every stack source, kept from the ``stacks.>`` subjects.

The console subscribes itself rather than asking a sampler or a worker, so a
flamegraph is there whichever processes run. Samples are kept (bounded) with
their arrival time and folded into a ``Frame`` tree when a page asks: a tree
per request of at most ``max_samples`` stacks is cheap, and a rolling tree
would need subtraction on every expiry.
"""

from __future__ import annotations

import time
from collections import deque

import msgspec

from flarebus.events import StackSample, decode_stacks
from flarebus.frame import Frame

DEFAULT_SECONDS = 60.0


class StackWindows:
    def __init__(self, seconds: float = DEFAULT_SECONDS, *, max_samples: int = 20_000) -> None:
        self.seconds = seconds
        self.max_samples = max_samples
        self.samples: dict[str, deque[tuple[float, StackSample]]] = {}
        self.invalid = 0

    def add_message(self, data: bytes, now: float | None = None) -> bool:
        """Keep a ``stacks.*`` payload's samples; False (and counted) when it is not valid."""
        try:
            decoded = decode_stacks(data)
        except (msgspec.DecodeError, ValueError):
            self.invalid += 1
            return False
        at = time.time() if now is None else now
        for sample in decoded:
            window = self.samples.setdefault(sample.source,
                                             deque(maxlen=self.max_samples))
            window.append((at, sample))
        return True

    def _prune(self, now: float) -> None:
        for window in self.samples.values():
            while window and window[0][0] < now - self.seconds:
                window.popleft()

    def sources(self, now: float | None = None) -> list[str]:
        self._prune(time.time() if now is None else now)
        return sorted(s for s, w in self.samples.items() if w)

    def tree(self, source: str, now: float | None = None) -> Frame:
        """The flamegraph of ``source`` over the last ``seconds``."""
        self._prune(time.time() if now is None else now)
        root = Frame()
        for _, sample in self.samples.get(source, ()):
            for stack in sample.stacks:
                root.add(stack.frames, stack.weight)
        return root

    def unit(self, source: str) -> str:
        window = self.samples.get(source)
        return window[-1][1].unit if window else "samples"
