"""Waiting for something unless a stop request (SIGTERM, Ctrl-C) comes first.

A service started before its NATS server waits for it (``bus.connect`` with
``retry_initial``); a signal in that time must end the process at once with
exit 0, as a signal to a running service does. The engine, the worker and
``flarebus up`` all wait this way, so the one helper lives here, beside the
other contracts every role shares.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(Exception):
    """The stop request came before the work was done (the work was cancelled)."""


async def unless_stopped(work: Coroutine[Any, Any, T], stop: asyncio.Event) -> T:
    """The result of ``work``, or ``Stopped`` once ``stop`` is set first (``work`` cancelled).

    ``work``'s own exception, if any, is the caller's.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise Stopped
    return task.result()
