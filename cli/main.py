"""The ``flarebus`` command: one console script, a subcommand per role or tool.

Each subcommand lives in its own module with ``register(subparsers)``; the
table below is the only place that knows them all. Building the parser
imports every one of them, so they import only the standard library and
flarebus' light modules at the top, and what their command needs (nats-py,
the rule language, OpenTelemetry, ...) when it runs: ``flarebus --help`` and
``flarebus publish`` start in milliseconds, not the third of a second that
importing everything took. tests/test_cli.py pins which libraries each start
may import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Coroutine, Sequence

from flarebus.cli.deferred import defer_aiohttp
from flarebus.cli.options import CommandParser, HelpFormatter
from flarebus.errors import FlarebusError, UsageError, describe

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
    "health": "flarebus.cli.health",
    "tail": "flarebus.cli.tail",
    "silence": "flarebus.cli.silence",
    "web": "flarebus.cli.web",
    "plugins": "flarebus.cli.plugins",
    "flamegraph": "flarebus.cli.flamegraph",
    "nats": "flarebus.cli.nats",
}

EPILOG = """\
roles: samplers publish metrics.<name> / stacks.<source>; the engine evaluates rules
and publishes triggers.<rule> to JetStream; workers run the rules' actions.

examples:
  flarebus up                                    # everything in one process, embedded NATS
  flarebus publish cpu.usage 93.5 -l host=web-1  # from another terminal, same directory
  flarebus tail                                  # the triggers, as they fire and resolve
  flarebus check rules/                          # validate rule files before deploying them
  flarebus COMMAND --help                        # each command's flags and examples"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flarebus",
        description="An event-driven rules engine on NATS.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (every error is otherwise one "
                             "line: what failed and what to check)")
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


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of subcommand ``name`` (to report a usage error the way argparse does)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]  # type: ignore[no-any-return]
    return parser


def setup_logging(verbosity: int) -> None:
    import logging

    level = logging.WARNING - 10 * verbosity if verbosity else logging.INFO
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("nats").setLevel(logging.CRITICAL)  # its errors reach us via callbacks
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # asyncio's complaint about nats-py's TLS protocol class, once per TLS connection: noise
    logging.getLogger("asyncio").addFilter(lambda record: "eof_received" not in str(record.msg))


def main(argv: Sequence[str] | None = None) -> int:
    defer_aiohttp()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a supervisor's children's
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose)
    try:
        result = args.func(args)
        if isinstance(result, Coroutine):
            import asyncio  # ~30 ms: only for the commands that are coroutines

            result = asyncio.run(result)
    except KeyboardInterrupt:
        return 130
    except UsageError as exc:
        command_parser(parser, args.command).error(str(exc))  # exits 2
    except FlarebusError as exc:
        if args.debug:
            raise
        print(f"flarebus {args.command}: {exc}" if "\n" not in str(exc) else str(exc),
              file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, or an OS error nothing named: still one line
        if args.debug:
            raise
        print(f"flarebus {args.command}: {_one_line(exc)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1
    return int(result or 0)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return describe(exc).replace("\n", " ")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
