"""``flarebus publish``: put samples on the bus from a shell.

``flarebus publish cpu.usage 93.5 -l host=web-1`` sends one sample;
``flarebus publish cpu.usage --stale -l host=web-1`` says that series ended;
``flarebus publish -`` reads JSON lines (one MetricSample each) from stdin and
sends them in batches. Input is validated before anything is sent: a bad flag
is a usage error (exit 2); a bad NAME, VALUE or line is reported with its line
number and field, and the command exits 1.
Lines are read and checked in chunks (up to ``--chunk`` lines, or what arrived
within 100 ms), and a chunk with any bad line is not sent at all.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Coroutine
from functools import cache
from typing import IO, TYPE_CHECKING

from flarebus.cli.options import add_nats_options, label, positive_int, settings, timestamp
from flarebus.errors import SampleError, UsageError

if TYPE_CHECKING:
    import msgspec

    from flarebus.events import MetricSample
    from flarebus.publish import Publisher


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "publish", help="publish a sample (or JSON lines from stdin)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus publish cpu.usage 93.5 -l host=web-1\n"
               "  flarebus publish cpu.usage 12 --ts 1763762400.25\n"
               "  flarebus publish cpu.usage --stale -l host=web-1   # the series ended\n"
               "  printf '%s\\n' '{\"name\": \"cpu.usage\", \"value\": 93.5}' | flarebus publish -")
    parser.add_argument("name", metavar="NAME",
                        help="metric name (e.g. cpu.usage), or - to read JSON lines from stdin")
    parser.add_argument("value", metavar="VALUE", nargs="?", help="the sample's value")
    parser.add_argument("-l", "--label", metavar="KEY=VALUE", type=label, action="append",
                        default=[], help="a label; repeat for several")
    parser.add_argument("--ts", type=timestamp,
                        help="Unix seconds (default: now, when the command starts)")
    parser.add_argument("--stale", action="store_true",
                        help="send a staleness marker instead of a value: the series NAME with "
                             "these labels ended (rules on it resolve now, as in Prometheus)")
    parser.add_argument("--chunk", type=positive_int, default=1000, metavar="N",
                        help="stdin lines checked and sent together")
    add_nats_options(parser)
    parser.set_defaults(func=run)


def sample_from_args(args: argparse.Namespace, now: float) -> MetricSample:
    """The one sample NAME VALUE -l ... --ts describe, stamped ``now`` unless --ts says when."""
    if args.stale and args.value is not None:
        raise UsageError("--stale takes no VALUE: a staleness marker says the series ended")
    if args.value is None and not args.stale:
        raise UsageError("VALUE is missing (or use --stale, or `flarebus publish -` for stdin)")
    import msgspec

    from flarebus.events import metric_sample

    ts = now if args.ts is None else args.ts
    value = 0.0 if args.stale else args.value
    try:
        return metric_sample(args.name, value, ts, dict(args.label), stale=args.stale)
    except msgspec.ValidationError as exc:
        raise SampleError(_field_message(exc), source="arguments") from None


_AT = re.compile(r"^(?P<message>.*?)(?: - at (?:`key` in )?`\$\.?(?P<path>[^`]*)`)?$", re.S)
_FIELD_FIRST = re.compile(r"^`(?P<field>[a-z_]+)` (?P<rest>.*)$", re.S)


def _field_message(exc: msgspec.ValidationError) -> str:
    """Lead with the field: msgspec says 'Expected `float`, got `str` - at `$.value`',
    flarebus says 'value: Expected `float`, got `str`'."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, path = match["message"], match["path"] or ""
    own = _FIELD_FIRST.match(message)  # MetricSample.__post_init__: "`name` 'x y' is not ..."
    if own:
        path = ".".join(p for p in (path, own["field"]) if p)
        message = own["rest"]
    return f"{path}: {message}" if path else message


@cache
def _line_decoder() -> msgspec.json.Decoder[MetricSample]:
    import msgspec

    from flarebus.events import MetricSample

    return msgspec.json.Decoder(MetricSample)


def decode_line(line: bytes, number: int, source: str) -> MetricSample:
    import msgspec

    try:
        return _line_decoder().decode(line)
    except msgspec.DecodeError as exc:
        raise SampleError(_field_message(exc) if isinstance(exc, msgspec.ValidationError)
                          else f"not valid JSON: {exc}", number, source) from None


async def publish_lines(pub: Publisher, stream: IO[bytes], *, chunk: int = 1000,
                        source: str = "<stdin>") -> int:
    """Validate and publish JSON lines chunk by chunk; return the number of samples sent."""
    import asyncio

    from flarebus.lines import LineTooLong, line_queue

    lines = line_queue(stream, chunk)
    number = 0
    sent = 0
    done = False
    while not done:
        batch: list[MetricSample] = []
        errors: list[SampleError] = []
        while len(batch) + len(errors) < chunk:
            try:
                raw = await asyncio.wait_for(lines.get(), 0.1) if batch or errors \
                    else await lines.get()
            except TimeoutError:
                break
            if raw is None:
                done = True
                break
            number += 1
            if isinstance(raw, LineTooLong):
                errors.append(SampleError(raw.reason, number, source))
                continue
            if not raw.strip():
                continue
            try:
                batch.append(decode_line(raw, number, source))
            except SampleError as exc:
                errors.append(exc)
        if errors:
            for error in errors:
                print(f"flarebus publish: {error}", file=sys.stderr)
            unsent = len(batch) + len(errors)
            raise SampleError(f"{len(errors)} invalid line(s); {unsent} line(s) of that chunk "
                              f"not sent, {sent} sent before", source=source)
        await pub.send_many(batch)
        sent += len(batch)
    return sent


def run(args: argparse.Namespace) -> Coroutine[None, None, int]:
    """Check and stamp the sample first, then connect and send it (main runs the coroutine).

    "Now" is when the command started, not after importing nats-py (~70 ms) and
    connecting: the sample says when it was taken.
    """
    now = time.time()
    if args.name == "-" and args.stale:
        raise UsageError('--stale is for one series; on stdin a line says "stale": true')
    single = None if args.name == "-" else sample_from_args(args, now)
    return _send(args, single)


async def _send(args: argparse.Namespace, single: MetricSample | None) -> int:
    from flarebus import bus
    from flarebus.publish import Publisher

    config = settings(args)
    nc = await bus.connect(config.nats)
    try:
        async with Publisher(nc, metrics_prefix=config.engine.metrics_prefix) as pub:
            if single is not None:
                await pub.send(single)
                sent = 1
            else:
                sent = await publish_lines(pub, sys.stdin.buffer, chunk=args.chunk)
    finally:
        await bus.close(nc)
    print(f"published {sent} sample(s) to {', '.join(config.nats.servers)}", file=sys.stderr)
    return 0
