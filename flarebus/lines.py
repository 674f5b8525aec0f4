"""Lines of a blocking stream (stdin, a pipe) as an asyncio queue, fed by a reader thread.

`flarebus publish -` and the ``stdin`` sampler both read JSON lines from a
stream that blocks, while their loop keeps publishing; a thread per stream
reads, the loop never waits on the file. The queue is bounded, so a fast
producer is slowed to what the bus takes instead of filling memory.
"""

from __future__ import annotations

import asyncio
import threading
from typing import IO


def start_reader(stream: IO[bytes], size: int) -> asyncio.Queue[bytes | None]:
    """The lines of ``stream`` on a queue of at most ``size * 4``; None marks the end."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size * 4)

    def reader() -> None:
        for raw in stream:
            asyncio.run_coroutine_threadsafe(queue.put(raw), loop).result()
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    threading.Thread(target=reader, name="flarebus-stdin", daemon=True).start()
    return queue
