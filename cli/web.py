"""``flarebus web``: the web console, in a browser: what is firing, why, and its flamegraph.

It reads everything from NATS (the engines' summaries, the triggers stream and
its dead letters, the finished actions, the stack samples), so it runs
anywhere NATS is reachable, beside or far from the engines, and needs no
database. Pages: Overview (engines, workers, rules with their firing and
pending counts), Series (filter by rule and label matchers), Triggers (history
with annotations and what the actions did; re-queue dead letters),
Flamegraphs (each stack source's last minute, and the graphs of triggers),
Silences and Visualizations. Pages update live, without a reload.

It is read-only unless a token is configured (``web.token`` in
flarebus.yaml, or FLAREBUS_WEB_TOKEN): a write (re-queue, silences) then
needs it, entered in the page's "Write token" field. It listens on loopback
unless ``--listen`` says otherwise. `flarebus up` serves the same console.
"""

from __future__ import annotations

import argparse

from flarebus.cli.options import add_nats_options, settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "web", help="the web console: firing series, triggers, flamegraphs (live)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus web                              # the `flarebus up` of this "
               "directory, on http://127.0.0.1:8090/\n"
               "  flarebus web --nats nats://10.0.0.5:4222 --listen 127.0.0.1:9000\n"
               "  FLAREBUS_WEB_TOKEN=$(openssl rand -hex 16) flarebus web   # allow writes\n"
               "  flarebus web --listen 0.0.0.0:8090       # reachable from other machines: "
               "put it behind TLS")
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="address to serve on (default: web.listen, 127.0.0.1:8090; "
                             "port 0 picks a free one)")
    add_nats_options(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from flarebus.web.server import parse_listen, running_console

    config = settings(args, web={"listen": args.listen})
    parse_listen(config.web.listen)  # a bad address fails before connecting
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with running_console(config) as url:
        mode = "writes need the token" if config.web.token else "read-only (no web.token)"
        print(f"flarebus web: {url} ({mode}); Ctrl-C stops", flush=True)
        await stop.wait()
    return 0
