"""The ``flarebus`` command: one console script, a subcommand per role or tool.

Each subcommand lives in its own module with ``register(subparsers)``; the
table below is the only place that knows them all, and modules are imported
only when their command runs, so ``flarebus publish`` does not pay for the
rules engine's imports.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence
from typing import Any

from flarebus.errors import FlarebusError

#: subcommand -> module that registers it (kept in the order ``--help`` lists them)
COMMANDS: dict[str, str] = {
    "up": "flarebus.cli.up",
    "engine": "flarebus.cli.engine",
    "worker": "flarebus.cli.worker",
    "sample": "flarebus.cli.sample",
    "publish": "flarebus.cli.publish",
    "check": "flarebus.cli.check",
    "replay": "flarebus.cli.replay",
    "test": "flarebus.cli.testrules",
    "status": "flarebus.cli.status",
    "tail": "flarebus.cli.tail",
    "plugins": "flarebus.cli.plugins",
    "flamegraph": "flarebus.cli.flamegraph",
    "nats": "flarebus.cli.nats",
}

EPILOG = """\
roles: samplers publish metrics.<name> / stacks.<source>; the engine evaluates rules
and publishes triggers.<rule> to JetStream; workers run the rules' actions.
Start with `flarebus up` (everything in one process, embedded NATS), or see
`flarebus COMMAND --help`."""


class CommandParser(argparse.ArgumentParser):
    """Every subcommand's parser: its module docstring is its description, kept as written."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flarebus",
        description="An event-driven rules engine on NATS.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a command not built yet is simply not offered
        module.register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * verbosity if verbosity else logging.INFO
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its errors reach us via callbacks
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        result = args.func(args)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
    except KeyboardInterrupt:
        return 130
    except FlarebusError as exc:
        print(f"flarebus {args.command}: {exc}" if "\n" not in str(exc) else str(exc),
              file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
