"""Lines of a blocking stream (stdin, a pipe) on an asyncio queue.

Reading ``sys.stdin`` from the event loop would block it; ``flarebus publish -``
and the ``stdin`` sampler both read their input through this one reader thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import IO


def line_queue(stream: IO[bytes], size: int) -> asyncio.Queue[bytes | None]:
    """Lines of ``stream`` on a bounded queue, fed by a reader thread; None marks the end.

    The queue holds at most ``4 * size`` lines, so a slow consumer slows the
    reader instead of buffering the whole input in memory.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size * 4)

    def reader() -> None:
        for raw in stream:
            asyncio.run_coroutine_threadsafe(queue.put(raw), loop).result()
        asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

    threading.Thread(target=reader, name="flarebus-stdin", daemon=True).start()
    return queue
