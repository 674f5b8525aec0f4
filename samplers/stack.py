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

The parts: stack_profiler.py (sampling), stack_publisher.py (the NATS side);
for another process, ``flarebus sample stack --pid PID`` wraps ``py-spy record``
(pyspy.py).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping, Sequence

from flarebus.config import NatsSettings
from flarebus.samplers.stack_profiler import (
    DEFAULT_INTERVAL,
    DEFAULT_RATE,
    StackProfiler,
    StackSink,
)
from flarebus.samplers.stack_publisher import NatsStackPublisher

__all__ = ["StackProfiler", "start", "stop"]


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
