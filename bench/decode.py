"""Decoding metric samples: the wire Struct against its twin without schema annotations.

MetricSample carries ``Meta(extra_json_schema=...)`` annotations so that
schemas/metric_sample.schema.json can be generated from it. They must cost
nothing to decode (a ``Meta(pattern=...)`` made decoding five times dearer, see
the Struct). This decodes 100k samples, as single messages and as batches of
100, with ``events.metric_decoder`` and with a decoder for an unannotated twin
of the Struct (same fields, same ``__post_init__``), in alternating order in
the same run, and prints the medians and their ratio.

    .venv/bin/python -m bench.decode [--samples 100000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgspec

from flarebus.events import MetricSample, encoder, metric_decoder


class BareSample(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """MetricSample as it was before its schema annotations."""

    name: str
    value: float
    ts: float | None = None
    labels: dict[str, str] = {}

    __post_init__ = MetricSample.__post_init__  # type: ignore[misc]  # the very same checks


def messages(samples: int) -> tuple[list[bytes], list[bytes]]:
    """The same samples (250 metrics x 40 series), one per message and 100 per message."""
    items = [MetricSample(f"m{i % 250}.value", float(i % 50), 1_763_762_400 + i * 1e-3,
                          {"series": f"s{i % 40}", "host": "web-1"}) for i in range(samples)]
    singles = [encoder.encode(item) for item in items]
    batches = [encoder.encode(items[i:i + 100]) for i in range(0, samples, 100)]
    return singles, batches


def timed(decode: Callable[[bytes], object], payloads: list[bytes]) -> float:
    start = time.perf_counter()
    for payload in payloads:
        decode(payload)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    singles, batches = messages(args.samples)
    bare = msgspec.json.Decoder(BareSample | list[BareSample])
    decoders = {"MetricSample (annotated)": metric_decoder.decode, "bare twin": bare.decode}
    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds):
        order = list(decoders.items())
        for name, decode in order if round_ % 2 else order[::-1]:  # neither always goes first
            for shape, payloads in (("single", singles), ("batch", batches)):
                times.setdefault((name, shape), []).append(timed(decode, payloads))
    for shape in ("single", "batch"):
        rates = {name: args.samples / statistics.median(times[(name, shape)])
                 for name in decoders}
        annotated, twin = rates.values()
        print(f"{shape:>6}: annotated {annotated:,.0f} samples/s, bare twin {twin:,.0f}/s, "
              f"ratio {annotated / twin:.2f}")


if __name__ == "__main__":
    main()
