"""Lines of sample input, each bounded in size; and a reader thread for blocking streams.

Sample files (``flarebus replay`` input, ``flarebus publish -``, the ``stdin``
and ``exec`` samplers) may be any number of lines long, so only each line is
bounded: ``for line in stream`` would hold a 50 MB line without a newline in
memory whole. ``bounded_lines`` reads at most ``MAX_LINE`` bytes of a line and
skips the rest of an over-long one in chunks, handing back a ``LineTooLong``
in its place so the caller reports it (at its line number) and goes on. One
MiB is the default ``max_payload`` of nats-server: a longer sample could not
be published anyway. Nesting needs no bound here: a sample's decoder is typed
(a few levels deep, anything deeper is a type error at the first wrong level).

Reading ``sys.stdin`` from the event loop would block it; ``flarebus publish -``
and the ``stdin`` sampler both read their input through one reader thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, AnyStr

MAX_LINE = 1024 * 1024
_SKIP_CHUNK = 64 * 1024
_NEWLINE: tuple[Any, ...] = ("\n", b"\n")  # text or binary streams alike


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """Stands for a line longer than the limit, which was skipped unread past it."""

    limit: int

    @property
    def reason(self) -> str:
        return f"line longer than {self.limit:,} bytes: skipped"


def bounded_lines(stream: IO[AnyStr], limit: int = MAX_LINE
                  ) -> Iterator[AnyStr | LineTooLong]:
    """The lines of ``stream`` (newline kept), a ``LineTooLong`` for each one past ``limit``."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line[-1:] in _NEWLINE:
            yield line
            continue
        while True:  # the rest of the long line, dropped as it is read
            rest = stream.readline(_SKIP_CHUNK)
            if not rest or rest[-1:] in _NEWLINE:
                break
        yield LineTooLong(limit)


def line_queue(stream: IO[bytes], size: int, limit: int = MAX_LINE
               ) -> asyncio.Queue[bytes | LineTooLong | None]:
    """Lines of ``stream`` on a bounded queue, fed by a reader thread; None marks the end.

    The queue holds at most ``4 * size`` lines, so a slow consumer slows the
    reader instead of buffering the whole input in memory.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | LineTooLong | None] = asyncio.Queue(maxsize=size * 4)

    def reader() -> None:
        for raw in bounded_lines(stream, limit):
            asyncio.run_coroutine_threadsafe(queue.put(raw), loop).result()
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    threading.Thread(target=reader, name="flarebus-stdin", daemon=True).start()
    return queue
