"""Evaluator throughput and memory: 10k series x 100 rules, each sample matching 1-2 rules.

Prints samples/s through ``Evaluator.ingest`` alone, next to a baseline loop in
the same run that only decodes the same samples with msgspec (what every
engine pays anyway), their ratio, and memory per tracked series (tracemalloc).
The ratio is also given interleaved: each batch's decoding and evaluation timed
back to back in this thread's CPU time, so other work on the machine (which
moved the wall-clock ratio between 1.05 and 3.1 in three runs under load)
affects both sides alike. Then an expr rule, ``sum by (service) (...)`` over the
same number of series, against one plain rule on the same samples in the same
run (``--expr-samples``).

    .venv/bin/python bench/evaluator.py [--series 10000] [--rules 100] [--samples 1000000]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

# bench/engine.py would shadow the engine package: put the repo root first instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from flarebus.engine.language.evaluator import Evaluator  # noqa: E402
from flarebus.engine.language.rulefile import load_rules_text  # noqa: E402
from flarebus.events import (  # noqa: E402
    MetricSample,
    decode_metrics,
    encoder,
    wire_decoder,
)


def rules_yaml(rules: int) -> str:
    """rules/2 metrics, two rules each: one on every series, one on env=prod only."""
    lines = ["rules:"]
    for i in range(rules // 2):
        lines += [f"  - name: r{i}-all", f"    metric: m{i}.value", '    when: "> 90"',
                  "    for: 30s", "    clear: \"< 80\"",
                  f"  - name: r{i}-prod", f"    metric: m{i}.value", "    labels: {env: prod}",
                  '    when: "> 95"', "    for: 1m", "    keep_firing_for: 30s"]
    return "\n".join(lines) + "\n"


def make_batches(series: int, metrics: int, samples: int, batch: int) -> list[bytes]:
    rng = random.Random(7)
    keys = [(f"m{i % metrics}.value", {"host": f"host-{i}", "env": "prod" if i % 2 else "dev",
                                       "zone": f"z{i % 3}"}) for i in range(series)]
    out = []
    ts = 1_763_762_400.0
    for start in range(0, samples, batch):
        items = []
        for j in range(start, min(start + batch, samples)):
            name, labels = keys[j % series]
            if j % series == 0:
                ts += 1.0  # every series gets one sample per second
            hot = (j % series) % 10 == 0  # a tenth of the series run hot and fire
            value = 90.0 + rng.random() * 10.0 if hot else rng.random() * 100.0
            items.append(MetricSample(name=name, value=value, ts=ts, labels=labels))
        out.append(encoder.encode(items))
    return out


def expr_figures(series: int, samples: int, batch: int) -> None:
    """``sum by (service)`` over ``series`` series (100 services) against a plain rule."""
    rng = random.Random(11)
    labels = [{"host": f"host-{i}", "service": f"svc-{i % 100}"} for i in range(series)]
    batches: list[list[MetricSample]] = []
    ts = 1_763_762_400.0
    current: list[MetricSample] = []
    for j in range(samples):
        if j % series == 0:
            ts += 1.0
        current.append(MetricSample(name="http.requests.rate", value=rng.random() * 10.0,
                                    ts=ts, labels=labels[j % series]))
        if len(current) == batch:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    plain = load_rules_text("rules:\n  - {name: p, metric: http.requests.rate, "
                            "when: '> 9.99', for: 30s}\n")
    expr = load_rules_text("rules:\n  - {name: e, expr: 'sum by (service) "
                           "(http.requests.rate)', when: '> 600', for: 30s}\n")
    figures = {}
    for label, rules, advance in (("plain rule", plain, False), ("expr, per instant", expr, False),
                                  ("expr, timer per batch", expr, True)):
        evaluator = Evaluator(rules)
        gc.collect()
        began = time.process_time()  # CPU time: steadier than wall time on a shared machine
        wall = time.perf_counter()
        for items in batches:
            evaluator.ingest(items, now=0.0)
            if advance:  # the engine's timer coming after every message: the worst case
                evaluator.advance(items[-1].ts or 0.0)
        evaluator.advance(ts)
        figures[label] = (samples / (time.process_time() - began),
                          samples / (time.perf_counter() - wall))
    base = figures["plain rule"][0]
    print(f"expr sum by (service), {series} series, {samples} samples in batches of {batch} "
          "(per CPU second; per wall-clock second):")
    for label, (rate, wall_rate) in figures.items():
        print(f"  {label + ':':24} {rate:12,.0f} samples/s  ({rate / base:.2f} x the plain "
              f"rule; wall {wall_rate:,.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100, help="samples per message (a batch)")
    parser.add_argument("--expr-samples", type=int, default=500_000,
                        help="samples for the expr figures (0: skip them)")
    args = parser.parse_args()

    rules = load_rules_text(rules_yaml(args.rules))
    payloads = make_batches(args.series, args.rules // 2, args.samples, args.batch)
    total = args.samples

    # baseline: decoding only (each batch decoded and dropped), as MetricSample and, since
    # the engine decodes into WireSample (checks in C and per message), as the engine does
    gc.collect()
    began = time.perf_counter()
    for payload in payloads:
        decode_metrics(payload)
    decode_s = time.perf_counter() - began
    began = time.perf_counter()
    for payload in payloads:  # (these batches mix metrics: check_wire, per message, is left out)
        wire_decoder.decode(payload)
    wire_s = time.perf_counter() - began

    # memory per tracked series: the first pass over every series creates its state
    evaluator = Evaluator(rules)
    first = [decode_metrics(p) for p in payloads[: max(1, args.series // args.batch)]]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for batch in first:
        evaluator.ingest(batch, now=batch[0].ts or 0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    stats = evaluator.stats()
    per_series = (after - before) / max(stats.series, 1)
    states = sum(len(e.states) for e in evaluator._series.values())

    # evaluation only, with a fresh evaluator: each batch is decoded (not timed) and then
    # evaluated (timed), so decoded samples are as short-lived as in the engine
    evaluator = Evaluator(rules)
    triggers = 0
    eval_s = 0.0
    del first
    gc.collect()
    clock = time.perf_counter
    cpu = time.thread_time
    decode_cpu = eval_cpu = 0.0
    for payload in payloads:
        began_cpu = cpu()
        batch = decode_metrics(payload)
        decoded_cpu = cpu()
        began = clock()
        triggers += len(evaluator.ingest(batch, now=0.0))
        eval_s += clock() - began
        eval_cpu += cpu() - decoded_cpu
        decode_cpu += decoded_cpu - began_cpu

    decode_rate = total / decode_s
    eval_rate = total / eval_s
    print(f"setup: {args.series} series x {args.rules} rules, {total} samples in batches of "
          f"{args.batch}; {states} (rule, series) states, "
          f"{states / max(stats.series, 1):.2f} rules per sample")
    print(f"decode only (msgspec):   {decode_rate:12,.0f} samples/s  ({decode_s:.3f} s)")
    print(f"evaluate only:           {eval_rate:12,.0f} samples/s  ({eval_s:.3f} s), "
          f"{triggers} triggers")
    print(f"ratio evaluate/decode:   {decode_s and eval_s / decode_s:12.2f} x the decoding time")
    print(f"ratio, interleaved CPU:  {decode_cpu and eval_cpu / decode_cpu:12.2f} x the decoding "
          f"time (this thread's CPU time, each batch decoded then evaluated: holds under load)")
    print(f"decode as the engine:    {total / wire_s:12,.0f} samples/s  ({wire_s:.3f} s; "
          f"WireSample; evaluate = {eval_s / wire_s:.2f} x this)")
    print(f"memory per series:       {per_series:12,.0f} bytes ({stats.series} series, "
          f"tracemalloc)")
    if args.expr_samples:
        expr_figures(args.series, args.expr_samples, args.batch)


if __name__ == "__main__":
    main()
