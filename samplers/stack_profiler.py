"""Sampling this Python process' thread stacks from a daemon thread (``StackProfiler``).

The sampling runs holding the GIL while the profiled program waits, so a
snapshot only records raw keys (tuples of code objects) and counts them; the
names (``module.qualname``, so stack rules and flamegraph searches match what
you call things) are built once per code object, and the Stacks once per
interval. ``start()`` in stack.py wires a profiler to a NATS publisher.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import CodeType, FrameType
from typing import Any

from flarebus.errors import SampleError
from flarebus.events import Stack, StackSample, is_token

log = logging.getLogger("flarebus.samplers.stack")

DEFAULT_RATE = 100.0
DEFAULT_INTERVAL = 1.0

StackSink = Callable[[StackSample], None]
RawStack = tuple[Any, ...]
"""A stack as sampled: leaf-first code objects (each followed by its line with ``lines``),
then the thread's label with ``threads``; StackProfiler.stacks() names them."""


class StackProfiler:
    """Samples this process' thread stacks on a daemon thread; hands a StackSample per interval
    to ``sink`` (called on the sampling thread: it must be quick and must not block)."""

    def __init__(self, source: str, sink: StackSink, *, rate: float = DEFAULT_RATE,
                 interval: float = DEFAULT_INTERVAL, labels: Mapping[str, str] | None = None,
                 threads: bool = False, lines: bool = False,
                 exclude_threads: Sequence[int] = ()) -> None:
        if not is_token(source):
            raise SampleError(f"source: {source!r} is not a subject token "
                              "(letters, digits, _ and -)")
        if rate <= 0 or interval <= 0:
            raise SampleError("rate and interval must be > 0")
        self.source = source
        self.sink = sink
        self.rate = rate
        self.interval = interval
        self.labels = dict(labels or {})
        self.threads = threads
        self.lines = lines
        self.exclude = set(exclude_threads)
        self.samples_taken = 0
        self._names: dict[CodeType, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _name(self, frame: FrameType) -> str:
        """``module.qualname`` of the frame's code, built once per code object."""
        code = frame.f_code
        name = self._names.get(code)
        if name is None:
            module = frame.f_globals.get("__name__") or "?"
            qualname = getattr(code, "co_qualname", code.co_name)
            name = self._names[code] = f"{module}.{qualname}"
        return name

    def _learn_names(self, frame: FrameType | None) -> None:
        while frame is not None:
            self._name(frame)
            frame = frame.f_back

    def sample_once(self, counts: dict[RawStack, int]) -> None:
        """Add one snapshot of every other thread's stack to ``counts``.

        This runs holding the GIL while the profiled program waits, so it only records raw
        keys: the leaf-first tuple of code objects (with line numbers when ``lines``), plus
        the thread's name when ``threads``. Names are built once per code object, and only
        when a stack is new in this window (a known key means every code in it is named);
        ``stacks()`` turns the keys into Stacks once per interval.
        """
        own = threading.get_ident()
        exclude = self.exclude
        lines = self.lines
        thread_names = {t.ident: t.name for t in threading.enumerate()} if self.threads else {}
        top: FrameType | None = None
        frame: FrameType | None = None
        frames = sys._current_frames()
        try:
            for ident, top in frames.items():
                if ident == own or ident in exclude:
                    continue
                raw: list[Any] = []
                append = raw.append
                frame = top
                if lines:
                    while frame is not None:
                        append(frame.f_code)
                        append(frame.f_lineno)
                        frame = frame.f_back
                else:
                    while frame is not None:
                        append(frame.f_code)
                        frame = frame.f_back
                if self.threads:
                    append(f"thread {thread_names.get(ident, ident)}")
                if not raw:
                    continue
                key = tuple(raw)
                count = counts.get(key)
                if count is None:
                    self._learn_names(top)
                    counts[key] = 1
                else:
                    counts[key] = count + 1
        finally:
            del frames, top, frame  # frames keep locals alive; do not hold them past the snapshot
        self.samples_taken += 1

    def stacks(self, counts: Mapping[RawStack, int]) -> list[Stack]:
        """The raw keys ``sample_once`` counted as Stacks of names, root first."""
        names = self._names
        threads = self.threads
        out = []
        for key, n in counts.items():
            codes = key[:-1] if threads else key
            if self.lines:
                frames = [f"{names[codes[i]]}:{codes[i + 1]}"
                          for i in range(len(codes) - 2, -1, -2)]
            else:
                frames = [names[code] for code in reversed(codes)]
            if threads:
                frames.insert(0, key[-1])
            out.append(Stack(frames, float(n)))
        return out

    def _emit(self, counts: dict[RawStack, int]) -> None:
        if not counts:
            return
        sample = StackSample(self.source, self.stacks(counts), time.time(), "samples",
                             self.labels)
        try:
            self.sink(sample)
        except Exception:  # the profiled program must never feel our failures
            log.exception("stack sampler %s: sink failed", self.source)

    def _run(self) -> None:
        period = 1.0 / self.rate
        counts: dict[RawStack, int] = {}
        next_sample = time.monotonic()
        next_emit = next_sample + self.interval
        while not self._stop.is_set():
            self.sample_once(counts)
            now = time.monotonic()
            if now >= next_emit:
                self._emit(counts)
                counts = {}
                next_emit += self.interval * max(1, int((now - next_emit) / self.interval) + 1)
            next_sample += period
            if next_sample < now:  # fell behind (a long GC, a suspended laptop): skip, no burst
                next_sample = now + period
            self._stop.wait(next_sample - now)
        self._emit(counts)

    def start(self) -> StackProfiler:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"flarebus-stack-{self.source}")
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling; the partial last interval is handed to the sink."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
