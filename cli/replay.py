"""``flarebus replay --rules PATH... SAMPLES.jsonl|-``: backtest rules offline, in event time.

Reads samples (JSON lines, metric or stack samples), evaluates them with the
engine's evaluator, fires due timers as the replayed clock passes them (and up
to the last sample at the end), and prints each trigger as one JSON line on
stdout. Needs no server. Progress goes to stderr on a terminal only.

``--stream SINCE`` backtests on what the bus really carried instead: the
samples stream that durable ingest (``engine.ingest.mode: durable``) keeps for
``engine.ingest.max_age``, from SINCE ago to now (needs the server).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from flarebus.cli.options import add_nats_options, interval, settings, timestamp
from flarebus.errors import UsageError

if TYPE_CHECKING:
    from flarebus.engine.language.replay import BadLine
    from flarebus.events import MetricSample, StackSample


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay", help="evaluate rules over recorded samples (offline, event time)",
        description=__doc__,
        epilog="examples:\n"
               "  flarebus replay --rules rules/examples/basic.yaml samples.jsonl\n"
               "  cat samples.jsonl | flarebus replay --rules rules/ - | jq .state\n"
               "  flarebus replay --rules rules/new.yaml --stream 6h   # the bus' last 6 hours")
    parser.add_argument("--rules", metavar="PATH", nargs="+", required=True,
                        help="rule files or directories")
    parser.add_argument("samples", metavar="SAMPLES", nargs="?",
                        help="JSON lines file, or - for stdin")
    parser.add_argument("--until", type=timestamp, metavar="TS",
                        help="fire timers up to this Unix time at the end "
                             "(default: the last sample's ts)")
    parser.add_argument("--stream", metavar="SINCE", type=interval,
                        help="replay the samples stream's last SINCE (e.g. 30m, 6h) instead of "
                             "a file: what durable ingest stored (engine.ingest)")
    add_nats_options(parser)
    parser.set_defaults(func=run)


class _Progress:
    """Samples read, rate and triggers so far, on stderr, at most once a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.samples = 0
        self.triggers = 0
        self.began = self.shown = time.monotonic()

    def count(self, stream: Iterator[MetricSample | StackSample]
              ) -> Iterator[MetricSample | StackSample]:
        for sample in stream:
            self.samples += 1
            if self.enabled and not self.samples % 4096:
                self.show()
            yield sample

    def show(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown < 1.0:
            return
        self.shown = now
        rate = self.samples / max(now - self.began, 1e-9)
        end = "\n" if final else "\r"
        print(f"replay: {self.samples} samples read, {rate:,.0f}/s, {self.triggers} triggers",
              end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.stream is not None:
        if args.samples is not None:
            raise UsageError("give SAMPLES or --stream SINCE, not both")
        import asyncio
        return asyncio.run(_run_stream(args))
    if args.samples is None:  # `--rules a.yaml b.yaml samples.jsonl`: --rules took them all
        if len(args.rules) < 2:
            raise UsageError("give SAMPLES (a JSON lines file, or -)")
        args.samples = args.rules.pop()
    if args.samples != "-" and not Path(args.samples).is_file():
        raise UsageError(f"SAMPLES: {args.samples!r}: no such file (or - for stdin)")
    from flarebus.engine.language.evaluator import Evaluator
    from flarebus.engine.language.replay import read_samples, replay
    from flarebus.engine.language.rulefile import load_rules
    from flarebus.events import encoder

    rules = load_rules(args.rules)
    bad: list[BadLine] = []
    stream: IO[str] = sys.stdin if args.samples == "-" else open(  # noqa: SIM115
        args.samples, encoding="utf-8")
    source = "<stdin>" if args.samples == "-" else args.samples
    progress = _Progress(sys.stderr.isatty())
    out = sys.stdout.buffer
    try:
        samples = progress.count(read_samples(stream, bad.append))
        for trigger in replay(Evaluator(rules), samples, until=args.until):
            progress.triggers += 1
            out.write(encoder.encode(trigger) + b"\n")
    finally:
        if stream is not sys.stdin:
            stream.close()
        out.flush()
    if progress.enabled:
        progress.show(final=True)
    for item in bad:
        print(f"{source}:{item.line}: {item.reason}", file=sys.stderr)
    if bad:
        print(f"replay: {len(bad)} bad lines skipped", file=sys.stderr)
    return 1 if bad else 0


async def _run_stream(args: argparse.Namespace) -> int:
    """``--stream SINCE``: the samples stream's history through the evaluator."""
    from flarebus import bus
    from flarebus.engine.language.evaluator import Evaluator
    from flarebus.engine.language.replay import replay
    from flarebus.engine.language.rulefile import load_rules
    from flarebus.engine.service.history import BadMessage, history
    from flarebus.events import encoder

    rules = load_rules(args.rules)
    config = settings(args)
    stream = config.engine.ingest.stream
    nc = await bus.connect(config.nats)
    bad: list[BadMessage] = []
    progress = _Progress(sys.stderr.isatty())
    try:
        samples = [s async for s in history(nc.jetstream(), stream, time.time() - args.stream,
                                            config.engine.metrics_prefix, bad)]
    finally:
        await bus.close(nc)
    out = sys.stdout.buffer
    for trigger in replay(Evaluator(rules), progress.count(iter(samples)), until=args.until):
        progress.triggers += 1
        out.write(encoder.encode(trigger) + b"\n")
    out.flush()
    print(f"replay: {progress.samples} samples from stream {stream}, {progress.triggers} "
          f"triggers", file=sys.stderr)
    for item in bad[:20]:
        print(f"{stream}:{item.seq} ({item.subject}): {item.reason}", file=sys.stderr)
    if bad:
        print(f"replay: {len(bad)} stored messages were not samples (skipped)", file=sys.stderr)
    return 0
