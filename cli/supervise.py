"""N child processes of one flarebus command, restarted when they crash: ``engine --processes N``.

Python evaluates on one core per process, so using a host's cores means
processes, not threads; coordinated engines already share the partitions
between processes, so the supervisor only has to start N of them, restart one
that dies (with backoff, so a child that cannot start does not spin), pass
SIGHUP on, and on SIGTERM stop them all gracefully (each hands its partitions
over). Each child gets SIGTERM if the supervisor itself dies
(``die_with_parent``): a kill -9 of the supervisor leaves no orphans, and the
children's partitions are then taken over like any dead engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from flarebus.backoff import Backoff
from flarebus.nats_server import die_with_parent

log = logging.getLogger("flarebus.supervise")

RESTART_BACKOFF = Backoff(0.5, 30.0)
#: A child that ran this long before it died is restarted without the backoff grown.
HEALTHY_AFTER = 60.0


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE`` (the children's command line)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


async def _spawn(argv: Sequence[str]) -> asyncio.subprocess.Process:
    preexec = die_with_parent if sys.platform.startswith("linux") else None
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "flarebus", *argv,
                                                stdin=asyncio.subprocess.DEVNULL,
                                                preexec_fn=preexec)


async def _keep_running(index: int, argv: Sequence[str], stop: asyncio.Event,
                        procs: dict[int, asyncio.subprocess.Process]) -> None:
    """Run child ``index`` until ``stop``; restart it whenever it exits before that."""
    loop = asyncio.get_running_loop()
    failures = 0
    while not stop.is_set():
        proc = procs[index] = await _spawn(argv)
        if stop.is_set():  # the stop came while it was starting: it missed the SIGTERM
            proc.send_signal(signal.SIGTERM)
        started = loop.time()
        log.info("process %d started (pid %d)", index, proc.pid)
        code = await proc.wait()
        if stop.is_set():
            return
        failures = 1 if loop.time() - started > HEALTHY_AFTER else failures + 1
        delay = RESTART_BACKOFF.ceiling(failures)
        log.error("process %d (pid %d) exited with code %s; restarting in %.1fs", index,
                  proc.pid, code, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def supervise(argv: Sequence[str], count: int, *, grace: float = 60.0) -> int:
    """Run ``count`` children of ``flarebus <argv>`` until SIGTERM/SIGINT; 0 after a clean stop."""
    from flarebus.cli.options import signal_events

    stop, reload = signal_events()
    return await run_children(argv, count, stop=stop, reload=reload, grace=grace)


async def run_children(argv: Sequence[str], count: int, *, stop: asyncio.Event,
                       reload: asyncio.Event | None = None, grace: float = 60.0) -> int:
    """``count`` children of ``flarebus <argv>``, kept running until ``stop``, then stopped.

    Setting ``reload`` sends them SIGHUP. 0 when every child exited 0 on the stop.
    """
    procs: dict[int, asyncio.subprocess.Process] = {}

    def forward(sig: int) -> None:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    async def forward_reloads() -> None:
        while reload is not None:
            await reload.wait()
            reload.clear()
            forward(signal.SIGHUP)

    keepers = [asyncio.create_task(_keep_running(i, argv, stop, procs)) for i in range(count)]
    reloads = asyncio.create_task(forward_reloads())
    log.info("supervising %d processes of: flarebus %s", count, " ".join(argv))
    try:
        await stop.wait()
    finally:
        reloads.cancel()
        forward(signal.SIGTERM)
        try:
            codes = await asyncio.wait_for(
                asyncio.gather(*(p.wait() for p in procs.values())), grace)
        except TimeoutError:
            log.error("processes still running after %.0fs: killing them", grace)
            forward(signal.SIGKILL)
            codes = [await p.wait() for p in procs.values()]
        await asyncio.gather(*keepers, reloads, return_exceptions=True)
    return 0 if all(code == 0 for code in codes) else 1
