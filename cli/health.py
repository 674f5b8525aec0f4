"""``flarebus health ROLE``: exit 0 when this role can do its work here, 1 and why when not.

Made for probes (Kubernetes liveness and readiness, compose health checks), so it
prints one line and only reads: it never creates a stream or a bucket. Every role
needs NATS answering and the triggers stream led (on a cluster, a stream with no
leader cannot take a trigger); then per role:

- ``engine``: an engine on this host (the pod's name is its hostname) wrote its
  summary within ``--max-age``. Engines write it at every checkpoint, so an
  engine that is stuck or has lost NATS stops refreshing it and fails the probe.
  ``--any-host`` accepts an engine anywhere (a check of the whole deployment).
- ``worker``: the workers' durable consumer answers. A worker process that died
  is seen by the orchestrator itself; this says whether a live one can pull.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import TYPE_CHECKING

from flarebus.cli.options import add_nats_options, interval, settings
from flarebus.durations import format_duration

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from flarebus.config import Config

ROLES = ("engine", "worker")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "health", help="exit 0/1: can this engine or worker work (for probes)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus health engine --config /etc/flarebus/flarebus.yaml   # a probe\n"
               "  flarebus health engine --any-host --max-age 1m                 # any engine\n"
               "  flarebus health worker --nats nats://a:4222,nats://b:4222\n"
               "exit code 0: healthy; 1: not (the reason on stderr)")
    parser.add_argument("role", choices=ROLES, help="the role to check")
    parser.add_argument("--max-age", type=interval, default=30.0, metavar="DURATION",
                        help="engine: its summary must be younger than this (default 30s; "
                             "engines write it every checkpoint_interval)")
    parser.add_argument("--any-host", action="store_true",
                        help="engine: accept an engine on any host, not only this one")
    add_nats_options(parser)
    parser.set_defaults(func=run)


async def _engine(js: JetStreamContext, args: argparse.Namespace) -> str | None:
    """None when healthy, else why not."""
    from nats.js.errors import NotFoundError

    from flarebus import bus
    from flarebus.engine.service.checkpoint import META_PREFIX, read_entries
    from flarebus.summary import SUMMARY_PREFIX, summary_decoder

    try:
        kv = await js.key_value(bus.ENGINE_STATE_BUCKET)
    except NotFoundError:
        return f"bucket {bus.ENGINE_STATE_BUCKET} does not exist: no engine has started"
    raw = await read_entries(kv, META_PREFIX + SUMMARY_PREFIX, timeout=10.0)
    summaries = [summary_decoder.decode(v) for v in raw.values()]
    host = socket.gethostname()
    now = time.time()
    mine = [s for s in summaries if args.any_host or s.host == host]
    fresh = [s for s in mine if now - s.updated_at <= args.max_age]
    if fresh:
        return None
    where = "anywhere" if args.any_host else f"on {host}"
    seen = ", ".join(f"{s.shard} on {s.host} {format_duration(round(now - s.updated_at))} ago"
                     for s in summaries) or "none"
    return (f"no engine {where} reported in the last {format_duration(args.max_age)} "
            f"(engines seen: {seen})")


async def _worker(js: JetStreamContext, config: Config) -> str | None:
    from nats.js.errors import NotFoundError

    from flarebus import bus

    try:
        await js.consumer_info(bus.TRIGGERS_STREAM, config.worker.consumer)
    except NotFoundError:
        return f"consumer {config.worker.consumer} does not exist: no worker has started"
    return None


async def run(args: argparse.Namespace) -> int:
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import APIError, NotFoundError

    from flarebus import bus

    config = settings(args)
    nc = await bus.connect(config.nats)
    try:
        js = nc.jetstream(timeout=5.0)
        try:
            await js.stream_info(bus.TRIGGERS_STREAM)
            problem = await (_engine(js, args) if args.role == "engine" else _worker(js, config))
        except NotFoundError:
            problem = f"stream {bus.TRIGGERS_STREAM} does not exist: no engine or worker started"
        except (APIError, NatsTimeout, TimeoutError) as exc:  # no leader, JetStream off
            problem = f"JetStream did not answer: {exc}"
    finally:
        await bus.close(nc)
    if problem is not None:
        print(f"flarebus health {args.role}: unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"{args.role} healthy")
    return 0
