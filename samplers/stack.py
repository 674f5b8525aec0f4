"""Stack sampling: this Python process from a background thread, or another via py-spy.

In your own program, two lines::

    import flarebus.samplers.stack
    flarebus.samplers.stack.start(source="api", nats="nats://127.0.0.1:4222")

start a daemon thread that reads every thread's stack (``sys._current_frames``)
``rate`` times a second, counts identical stacks, and every ``interval`` seconds
publishes one StackSample on ``stacks.<source>`` (weights are sample counts).
Frames are named ``module.qualname`` (``myapp.db.query``), so stack rules and
flamegraph searches match what you call things; ``lines=True`` appends the line.
Publishing runs on its own thread with its own NATS connection, so the program
needs no event loop, and an unreachable server never blocks or breaks it (stacks
queue up to a bound, then the oldest are dropped and counted).

For another process, ``flarebus sample stack --pid PID`` wraps ``py-spy record``
(``pip install py-spy``); py-spy names frames ``function (file.py:line)``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, ClassVar

from flarebus.config import NatsSettings
from flarebus.errors import PluginError, SampleError
from flarebus.events import Stack, StackSample, is_token
from flarebus.sampler import Sample, Sampler

log = logging.getLogger("flarebus.samplers.stack")

DEFAULT_RATE = 100.0
DEFAULT_INTERVAL = 1.0
MAX_QUEUED = 256

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


class NatsStackPublisher:
    """A sink that publishes StackSamples from its own thread, event loop and NATS connection."""

    def __init__(self, settings: NatsSettings, *, stacks_prefix: str = "stacks",
                 max_queued: int = MAX_QUEUED) -> None:
        self.settings = settings
        self.stacks_prefix = stacks_prefix
        self.max_queued = max_queued
        self.dropped = 0
        self.published = 0
        self._loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[StackSample | None] | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name="flarebus-stack-publisher")
        self._thread.start()
        self._ready.wait()

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    def __call__(self, sample: StackSample) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, sample)
        except RuntimeError:  # closed: the publisher has stopped
            self.dropped += 1

    def _put(self, sample: StackSample) -> None:
        assert self._queue is not None
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(sample)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._queue = asyncio.Queue(self.max_queued)
        self._loop.call_soon(self._ready.set)
        self._loop.run_until_complete(self._publish())
        self._loop.close()

    async def _publish(self) -> None:
        from flarebus import bus
        from flarebus.publish import Publisher

        assert self._queue is not None
        nc = None
        try:
            nc = await bus.connect(self.settings, retry_initial=True)
            publisher = Publisher(nc, stacks_prefix=self.stacks_prefix, batch=False)
            while (sample := await self._queue.get()) is not None:
                await publisher.send_stacks(sample)
                self.published += 1
            await publisher.close()
        except Exception:
            log.exception("stack publisher stopped")
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await bus.close(nc)

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued, then disconnect (waits up to ``timeout`` seconds)."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)  # type: ignore[union-attr]
            self._thread.join(timeout)


class _Running:
    """The profiler start() made, and its publisher, so stop() can end both."""

    profiler: StackProfiler | None = None
    publisher: NatsStackPublisher | None = None


def start(source: str, nats: str | Sequence[str] | NatsSettings | None = None, *,
          rate: float = DEFAULT_RATE, interval: float = DEFAULT_INTERVAL,
          labels: Mapping[str, str] | None = None, threads: bool = False, lines: bool = False,
          sink: StackSink | None = None, stacks_prefix: str = "stacks") -> StackProfiler:
    """Sample this process' stacks and publish them on ``stacks.<source>``.

    ``nats``: server URL(s) or settings (default ``$FLAREBUS_NATS_URL``, then
    nats://127.0.0.1:4222); or give ``sink`` to receive the StackSamples yourself.
    Stopped by ``stop()`` or at interpreter exit (the last interval is published).
    """
    stop()
    publisher = None
    if sink is None:
        if isinstance(nats, NatsSettings):
            settings = nats
        else:
            urls = nats or os.environ.get("FLAREBUS_NATS_URL") or "nats://127.0.0.1:4222"
            servers = [u.strip() for u in urls.split(",")] if isinstance(urls, str) \
                else list(urls)
            settings = NatsSettings(servers=servers, name=f"flarebus-stack-{source}")
        publisher = NatsStackPublisher(settings, stacks_prefix=stacks_prefix)
        sink = publisher
    exclude = [publisher.thread_id] if publisher and publisher.thread_id else []
    profiler = StackProfiler(source, sink, rate=rate, interval=interval, labels=labels,
                             threads=threads, lines=lines, exclude_threads=exclude)
    _Running.profiler, _Running.publisher = profiler, publisher
    return profiler.start()


def stop() -> None:
    """Stop what start() started, publishing the last interval first."""
    profiler, publisher = _Running.profiler, _Running.publisher
    _Running.profiler = _Running.publisher = None
    if profiler is not None:
        profiler.stop()
    if publisher is not None:
        publisher.close()


atexit.register(stop)


# -- another process: py-spy ---------------------------------------------------------------

PY_SPY_MISSING = ("py-spy is not installed (or not on PATH), so flarebus cannot sample another "
                  "process' stacks: `pip install py-spy`, or give its path as config py_spy. "
                  "To profile your own Python program instead, add two lines to it: "
                  "`import flarebus.samplers.stack; flarebus.samplers.stack.start(source=\"app\", "
                  "nats=\"nats://...\")`.")


def find_py_spy(path: str | None = None) -> str:
    """The py-spy executable, or PluginError saying plainly that it is missing."""
    found = shutil.which(path or os.environ.get("FLAREBUS_PY_SPY") or "py-spy")
    if found is None:
        raise PluginError("stack", PY_SPY_MISSING, source="sampler config")
    return found


def parse_raw(text: str) -> list[Stack]:
    """py-spy's ``--format raw`` (folded: ``root;...;leaf count``) as Stacks."""
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rstrip().rpartition(" ")
        if frames and count.replace(".", "", 1).isdigit() and float(count) > 0:
            stacks.append(Stack(frames.split(";"), float(count)))
    return stacks


class PySpySampler(Sampler):
    """``stack``: another Python process' stacks via ``py-spy record``, one StackSample a window."""

    name = "stack"
    default_interval = None  # a stream: py-spy records a window, we publish it, repeat
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["pid"],
        "properties": {
            "pid": {"type": "integer", "minimum": 1},
            "source": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+$"},
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "window": {"type": "number", "minimum": 1,
                       "description": "seconds each py-spy run records (one StackSample)"},
            "threads": {"type": "boolean"},
            "idle": {"type": "boolean", "description": "include idle threads"},
            "py_spy": {"type": "string", "description": "path of the py-spy executable"},
        },
    }
    options = (
        ("--pid", "pid", int, "process id to sample"),
        ("--source", "source", str, "stack source name (default: pid-<PID>)"),
        ("--rate", "rate", float, "samples per second (default 100)"),
        ("--window", "window", float, "seconds per published StackSample (default 5)"),
    )

    executable: str | None = None

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.source = self.config.get("source") or f"pid-{self.config['pid']}"
        self.executable = find_py_spy(self.config.get("py_spy"))

    def command(self, output: Path) -> list[str]:
        assert self.executable is not None
        argv = [self.executable, "record", "--pid", str(self.config["pid"]), "--format", "raw",
                "--rate", str(int(self.config.get("rate", DEFAULT_RATE))),
                "--duration", str(int(self.config.get("window", 5))),
                "--function", "--nonblocking", "--output", str(output)]
        if self.config.get("threads"):
            argv.append("--threads")
        if self.config.get("idle"):
            argv.append("--idle")
        return argv

    async def stream(self) -> AsyncIterator[Sequence[Sample]]:
        with tempfile.TemporaryDirectory(prefix="flarebus-pyspy-") as tmp:
            output = Path(tmp) / "stacks.txt"
            while True:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(output), stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE)
                try:
                    _, err = await proc.communicate()
                finally:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
                if proc.returncode != 0 or not output.exists():
                    message = err.decode(errors="replace").strip()[-500:]
                    raise SampleError(f"py-spy exited with {proc.returncode}: {message}")
                stacks = parse_raw(output.read_text())
                output.unlink()
                if stacks:
                    yield [StackSample(self.source, stacks, time.time(), "samples",
                                       {"pid": str(self.config["pid"])})]
