"""``flarebus publish``: put samples on the bus from a shell.

``flarebus publish cpu.usage 93.5 -l host=web-1`` sends one sample;
``flarebus publish -`` reads JSON lines (one MetricSample each) from stdin and
sends them in batches. Input is validated before anything is sent: a bad
argument or line is reported with its line number and the command exits 1.
Lines are read and checked in chunks (up to ``--chunk`` lines, or what arrived
within 100 ms), and a chunk with any bad line is not sent at all.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from typing import IO

import msgspec

from flarebus import bus
from flarebus.cli.options import add_nats_options, settings
from flarebus.errors import SampleError
from flarebus.events import MetricSample, metric_sample
from flarebus.lines import line_queue
from flarebus.publish import Publisher

_line_decoder = msgspec.json.Decoder(MetricSample)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "publish", help="publish a sample (or JSON lines from stdin)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus publish cpu.usage 93.5 -l host=web-1\n"
               "  flarebus publish cpu.usage 12 --ts 1763762400.25\n"
               "  printf '%s\\n' '{\"name\": \"cpu.usage\", \"value\": 93.5}' | flarebus publish -")
    parser.add_argument("name", metavar="NAME",
                        help="metric name (e.g. cpu.usage), or - to read JSON lines from stdin")
    parser.add_argument("value", metavar="VALUE", nargs="?", help="the sample's value")
    parser.add_argument("-l", "--label", metavar="KEY=VALUE", action="append", default=[],
                        help="a label; repeat for several")
    parser.add_argument("--ts", type=float, help="Unix seconds (default: now)")
    parser.add_argument("--chunk", type=int, default=1000,
                        help="stdin lines checked and sent together")
    add_nats_options(parser)
    parser.set_defaults(func=run)


def parse_labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SampleError(f"label {item!r}: use KEY=VALUE")
        labels[key] = value
    return labels


def sample_from_args(args: argparse.Namespace) -> MetricSample:
    if args.value is None:
        raise SampleError("VALUE is missing (or use `flarebus publish -` for stdin)")
    try:
        return metric_sample(args.name, args.value, args.ts, parse_labels(args.label))
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


def decode_line(line: bytes, number: int, source: str) -> MetricSample:
    try:
        return _line_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise SampleError(_field_message(exc) if isinstance(exc, msgspec.ValidationError)
                          else f"not valid JSON: {exc}", number, source) from None


async def publish_lines(pub: Publisher, stream: IO[bytes], *, chunk: int = 1000,
                        source: str = "<stdin>") -> int:
    """Validate and publish JSON lines chunk by chunk; return the number of samples sent."""
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
            if not raw.strip():
                continue
            try:
                batch.append(decode_line(raw, number, source))
            except SampleError as exc:
                errors.append(exc)
        if errors:
            for exc in errors:
                print(f"flarebus publish: {exc}", file=sys.stderr)
            unsent = len(batch) + len(errors)
            raise SampleError(f"{len(errors)} invalid line(s); {unsent} line(s) of that chunk "
                              f"not sent, {sent} sent before", source=source)
        await pub.send_many(batch)
        sent += len(batch)
    return sent


async def run(args: argparse.Namespace) -> int:
    single = None if args.name == "-" else sample_from_args(args)  # validate before connecting
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
