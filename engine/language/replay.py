"""Replay: samples from JSON lines through the evaluator in event time, triggers out.

Shared by ``flarebus replay`` (backtesting a rule on recorded data) and
``flarebus test`` (rule unit tests), so both run exactly the engine's evaluator.
A sample without ``ts`` takes the replay clock (the newest ``ts`` so far).
At the end, timers due up to the last sample's time fire; nothing later does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec

from flarebus.engine.language.evaluator import Evaluator
from flarebus.events import MetricSample, StackSample, Trigger
from flarebus.lines import LineTooLong, bounded_lines

_metric_line = msgspec.json.Decoder(MetricSample)
_stack_line = msgspec.json.Decoder(StackSample)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of the input that is not a sample: where and why (replay goes on without it)."""

    line: int
    reason: str


def read_samples(stream: IO[str], on_bad: Callable[[BadLine], None]
                 ) -> Iterator[MetricSample | StackSample]:
    """Decode JSON lines (blank lines and # comments skipped); bad lines go to ``on_bad``."""
    for number, line in enumerate(bounded_lines(stream), 1):
        if isinstance(line, LineTooLong):
            on_bad(BadLine(number, line.reason))
            continue
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            is_stack = '"stacks"' in text and '"source"' in text
            yield (_stack_line if is_stack else _metric_line).decode(text)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            on_bad(BadLine(number, str(exc)))


def replay(evaluator: Evaluator, samples: Iterable[MetricSample | StackSample], *,
           until: float | None = None) -> Iterator[Trigger]:
    """Feed ``samples`` in order; yield triggers in event-time order as they happen.

    Timers fire as the replayed clock passes them; at the end, up to ``until``
    (default: the newest sample time).
    """
    clock: float | None = None
    for sample in samples:
        if sample.ts is None:
            sample.ts = clock if clock is not None else 0.0
        clock = sample.ts if clock is None else max(clock, sample.ts)
        if isinstance(sample, MetricSample):
            yield from evaluator.ingest((sample,), now=clock)
        else:
            yield from evaluator.ingest_stacks((sample,), now=clock)
    end = until if until is not None else clock
    if end is not None:
        yield from evaluator.advance(end)
