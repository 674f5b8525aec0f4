"""``flarebus worker``: an action worker; start as many as the load needs.

All workers share one durable JetStream consumer, so each new process adds
capacity and stopping one loses nothing. SIGTERM drains: in-flight actions
finish within the grace period, the rest are handed back; exit code 0.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from flarebus.cli.options import add_nats_options, positive_int, settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "worker", help="run an action worker (start as many as you like)", description=__doc__,
        epilog="examples:\n"
               "  flarebus worker --nats nats://127.0.0.1:4222 --plugin-dir plugins/\n"
               "  flarebus worker --concurrency 64 --default-action log   # one more worker")
    add_nats_options(parser)
    parser.add_argument("--concurrency", type=positive_int, metavar="N",
                        help="triggers handled at once (default: worker.concurrency, 16)")
    parser.add_argument("--plugin-dir", metavar="DIR",
                        help="directory of .py plugin files (default: $PLUGIN_DIR)")
    parser.add_argument("--batch", type=positive_int, metavar="N",
                        help="triggers fetched per request (default: worker.batch, 32)")
    parser.add_argument("--default-action", metavar="PLUGIN",
                        help="action for rules naming none (default: $ACTION_PLUGIN, else log)")
    parser.add_argument("--max-tries", type=positive_int, metavar="N",
                        help="tries before a trigger is dead-lettered (default 5)")
    parser.add_argument("--telemetry", choices=("none", "console", "otlp"),
                        help="telemetry exporter (default: config, or $OTEL_TRACES_EXPORTER)")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from flarebus import telemetry
    from flarebus.actions.service import run_worker
    from flarebus.stopping import Stopped

    worker: dict[str, Any] = {"concurrency": args.concurrency, "plugin_dir": args.plugin_dir,
                              "batch": args.batch, "default_action": args.default_action,
                              "max_tries": args.max_tries}
    config = settings(args, worker=worker, telemetry={"exporter": args.telemetry})
    if (os.environ.get("OTEL_TRACES_EXPORTER") or config.telemetry.exporter) != "none":
        # Only then: SDK spans cost a few microseconds per action even when exported nowhere.
        telemetry.setup(config.telemetry.exporter, service_name=config.telemetry.service_name,
                        endpoint=config.telemetry.endpoint)
    stop = asyncio.Event()  # set by a signal: also while NATS is still being waited for
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(config, stop=stop)
    except Stopped:
        logging.getLogger("flarebus.worker").warning(
            "stopped before the worker was ready (NATS was not reachable)")
    await _leave_lingering_threads(logging.getLogger("flarebus.worker"))
    return 0


async def _leave_lingering_threads(log: Any, wait: float = 1.0) -> None:
    """Exit now if plugin threads are still running once the worker has stopped.

    Python cannot stop a thread: a blocking plugin stuck in ``execute`` (its timeout
    only stops the waiting) or a thread a plugin started and never ended would make
    the interpreter wait for it at exit, forever, after a clean SIGTERM. The worker's
    work is done and acknowledged by then, so it says which threads it leaves and exits.
    """
    import asyncio
    import logging
    import threading

    def lingering() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t is not threading.main_thread() and t.is_alive() and not t.daemon]

    deadline = asyncio.get_running_loop().time() + wait
    while lingering() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    if left := lingering():
        log.warning("exiting with %d plugin thread(s) still running, not waiting for them: %s",
                    len(left), ", ".join(sorted(t.name for t in left)))
        logging.shutdown()
        os._exit(0)
