"""Every bench in bench/ runs to the end at its smallest size and prints its figures.

The benches are how the README's table is made; one that broke (an engine
attribute renamed under it) would only be found at the next quiet run. No
figure is checked against a goal here: timing belongs to the benches.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT

NUMBER = r"[\d,]+(\.\d+)?"


def bench(module: str, *args: str, timeout: float = 240) -> str:
    """Run ``python -m bench.<module> args``; its stdout, or fail with everything it printed."""
    out = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def figures(text: str, *labels: str) -> None:
    """Each label is followed on its line by a number."""
    for label in labels:
        assert re.search(rf"{re.escape(label)}.*?{NUMBER}", text), f"no {label!r} in:\n{text}"


@pytest.mark.parametrize(("module", "args", "labels"), [
    ("decode", ["--samples", "2000", "--rounds", "1"], ["single: annotated", "batch: annotated"]),
    ("evaluator", ["--series", "200", "--rules", "10", "--samples", "4000",
                   "--expr-samples", "2000"],
     ["ratio, interleaved CPU:", "memory per series:", "expr, per instant:"]),
    ("publish", ["--samples", "3000", "--rounds", "1", "--runs", "1"],
     ["Publisher, batched", "batched / single:", "flarebus --help"]),
    ("workers", ["--count", "300", "--rounds", "1", "--scale-count", "60"],
     ["ratio worker/bare", "4 workers / 1 worker:"]),
    ("samplers", ["--rounds", "1", "--work", "0.2", "--stacks", "3000"],
     ["slowdown:", "Frame.add per stack:"]),
], ids=["decode", "evaluator", "publish", "workers", "samplers"])
def test_bench_prints_its_figures(module: str, args: list[str], labels: list[str]) -> None:
    """The bench exits 0 and prints a number after each of its figures' labels."""
    figures(bench(module, *args), *labels)


def test_engine_bench_quick_prints_every_section() -> None:
    """bench.engine --quick: ingest, latency, restart, durable and coordination sections."""
    text = bench("engine", "--quick", "--rounds", "1", timeout=420)
    figures(text, "1. ingest, single-sample", "2. ingest, batched", "p99", "tracked after restart:")
    for section in ("3. latency", "4. restart", "5. durable", "6.", "7."):
        assert section in text, text
