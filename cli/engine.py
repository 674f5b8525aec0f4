"""``flarebus engine``: the rules engine service.

Subscribes to ``metrics.>`` and ``stacks.>``, evaluates the rules, publishes
each firing and resolution once to JetStream (``triggers.<rule>``), keeps its
state in the JetStream KV bucket so a restart resumes where it stopped.

Engines started without --shard share the series: 64 partitions of the
subject space, held through leases in the FLAREBUS_ENGINE_LEASES bucket. Start
more engines, on this host or others, and the partitions rebalance; kill one
and the others take its partitions over (within the lease TTL, 6s, plus a
second or two) from its checkpoints. --processes N runs N such engines here,
one per core, restarting any that crashes. --shard i/N is the static mode:
fixed shards, nothing taken over.

Signals: SIGHUP reloads the rule files (so does any change to them);
SIGTERM/SIGINT stop gracefully (no more input, publishes flushed, final
checkpoint, partitions handed over, exit 0).
"""

from __future__ import annotations

import argparse

from flarebus.cli.options import (
    add_nats_options,
    interval,
    positive_int,
    settings,
    shard,
    signal_events,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "engine", help="run the rules engine", description=__doc__,
        epilog="examples:\n"
               "  flarebus engine --nats nats://127.0.0.1:4222 --rules rules/\n"
               "  flarebus engine --rules rules/ --processes 2  # two coordinated engines here\n"
               "  flarebus engine --rules rules/ --shard 0/2   # static: and --shard 1/2 elsewhere")
    parser.add_argument("--rules", metavar="PATH", nargs="+", action="extend",
                        help="rule files or directories (default: engine.rules from the config)")
    parser.add_argument("--shard", metavar="I/N", type=shard,
                        help="static mode: own only the series whose key hashes to shard I of "
                             "N, 0 <= I < N (default: engine.shard; none: share the partitions "
                             "with the other engines)")
    parser.add_argument("--processes", metavar="N", type=positive_int, default=1,
                        help="run N coordinated engine processes (e.g. one per core), "
                             "restarting any that exits (default: 1, this process)")
    parser.add_argument("--checkpoint-interval", metavar="DURATION", type=interval,
                        help="how often state is checkpointed to KV, e.g. 5s or 5 "
                             "(default: engine.checkpoint_interval, 5s)")
    parser.add_argument("--telemetry", choices=("none", "console", "otlp"),
                        help="telemetry exporter (default: config, or $OTEL_TRACES_EXPORTER)")
    add_nats_options(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:

    if args.processes > 1:
        from flarebus.cli.supervise import supervise, without_option
        from flarebus.errors import UsageError

        if args.shard:
            raise UsageError("--processes runs coordinated engines: leave out --shard")
        return await supervise(without_option(args.argv, "--processes"), args.processes)

    from flarebus import telemetry
    from flarebus.engine.service.lifecycle import run_engine

    config = settings(args, engine={"rules": args.rules, "shard": args.shard,
                                    "checkpoint_interval": args.checkpoint_interval},
                      telemetry={"exporter": args.telemetry})
    telemetry.setup(config.telemetry.exporter, service_name=config.telemetry.service_name,
                    endpoint=config.telemetry.endpoint)
    stop, reload = signal_events()
    await run_engine(config, config.engine.rules, stop=stop, reload=reload)
    return 0
