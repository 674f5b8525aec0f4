"""``flarebus flamegraph``: record a source's stacks off the bus and write a flamegraph.

``flarebus flamegraph --source api --seconds 30 -o api.svg`` listens on
``stacks.api`` for 30 seconds and writes an interactive SVG; the format follows
the suffix (``.svg``, ``.html``, ``.folded``/``.collapsed``/``.txt``, ``.json`` =
speedscope) or ``--format``. ``-o -`` writes to stdout. ``--input FILE`` reads
StackSamples (JSON lines, or a folded file) instead of the bus: no server needed.
Ctrl-C (or SIGTERM) ends a recording early and still writes it: for a run whose
length is not known in advance (``bench/engine.py --profile`` stops it so).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flarebus.cli.options import (
    add_later,
    add_nats_options,
    existing_file,
    interval,
    settings,
    token,
)
from flarebus.errors import SampleError, UsageError

if TYPE_CHECKING:
    import asyncio

    from flarebus.events import StackSample
    from flarebus.samplers.aggregate import Frame


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "flamegraph", help="record stacks.<source> and write a flamegraph (svg, html, ...)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus flamegraph --source api --seconds 30 -o api.svg\n"
               "  flarebus flamegraph --source api --seconds 10 -o - --format folded\n"
               "  flarebus flamegraph --input stacks.jsonl -o out.html")
    parser.add_argument("--source", type=token,
                        help="stack source (the tail of stacks.<source>); needed unless --input")
    parser.add_argument("--seconds", type=interval, default="30s", metavar="DURATION",
                        help="how long to record, e.g. 30 or 2m")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="output file (.svg .html .folded .json), or - for stdout")
    add_later(parser, _add_output_arguments)  # the formats are the exporters': load them late
    parser.set_defaults(func=run)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    from flarebus.samplers.exporters import EXPORTERS

    parser.add_argument("--format", choices=sorted(EXPORTERS),
                        help="output format (default: from the file suffix; stdout: folded)")
    parser.add_argument("--title", help="title shown in the SVG/HTML")
    parser.add_argument("--input", metavar="FILE", type=existing_file,
                        help="read StackSamples (JSON lines) or folded text instead of the bus")
    add_nats_options(parser)


@contextlib.contextmanager
def _stop_on_signal() -> Iterator[asyncio.Event]:
    """An event SIGINT and SIGTERM set while recording, instead of killing the command.

    A recording of unknown length (a benchmark run, watching a service until the
    problem shows) is ended by a signal and still written.
    """
    import asyncio  # lazily, like every command's heavy imports (start-up time)
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def read_input(path: str, source: str | None) -> Frame:
    """A tree from a file of StackSample JSON lines (filtered by source) or folded text."""
    from flarebus.events import decode_stacks
    from flarebus.samplers.aggregate import build
    from flarebus.samplers.exporters import parse_folded

    text = Path(path).read_text()
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first.lstrip().startswith(("{", "[")):
        try:
            return parse_folded(text)
        except ValueError as exc:
            raise SampleError(str(exc), source=path) from None
    samples: list[StackSample] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            decoded = decode_stacks(line.encode())
        except ValueError as exc:
            raise SampleError(f"not a StackSample: {exc}", number, path) from None
        samples.extend(s for s in decoded if source is None or s.source == source)
    return build(samples)


async def run(args: argparse.Namespace) -> int:
    from flarebus.samplers.exporters import exporter, format_for_path

    fmt = args.format or ("folded" if args.output == "-" else None)
    try:
        fmt = fmt or format_for_path(args.output)
    except ValueError as exc:
        raise UsageError(f"-o: {exc}") from None
    unit = "samples"
    if args.input:
        tree = read_input(args.input, args.source)
        count = None
    else:
        if not args.source:
            raise UsageError("--source: name the stack source to record (e.g. --source api), "
                             "or read a file with --input")
        from flarebus import bus
        from flarebus.samplers.collect import record

        config = settings(args)
        nc = await bus.connect(config.nats)
        try:
            def started() -> None:  # subscribed: a caller waiting for this line misses nothing
                print(f"recording stacks.{args.source} for {args.seconds:g}s "
                      "(Ctrl-C or SIGTERM: stop early and write it) ...", file=sys.stderr,
                      flush=True)

            with _stop_on_signal() as stop:
                tree, unit, count = await record(nc, args.source, args.seconds,
                                                 prefix=config.engine.stacks_prefix, stop=stop,
                                                 on_started=started)
        finally:
            await bus.close(nc)
    title = args.title or f"flarebus flamegraph: {args.source or args.input}"
    data = exporter(fmt, title=title, unit=unit).export(tree)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(args.output).write_bytes(data)
    got = f"{count} stack sample(s), " if count is not None else ""
    print(f"wrote {args.output} ({fmt}): {got}{tree.value:g} {unit} total", file=sys.stderr)
    if count == 0:
        print(f"note: nothing arrived on stacks.{args.source}; is a stack sampler running?",
              file=sys.stderr)
    return 0
