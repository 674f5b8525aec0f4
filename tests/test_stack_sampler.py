"""Stack sampling: a program with a known hot function shows it in its flamegraph."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.rulefile import load_rules
from flarebus.errors import PluginError
from flarebus.events import Stack, StackSample, decode_stacks, encoder
from flarebus.samplers.aggregate import build
from flarebus.samplers.pyspy import PY_SPY_MISSING, PySpySampler, find_py_spy, parse_raw
from flarebus.samplers.runtime import collect_once
from flarebus.samplers.stack_profiler import StackProfiler
from tests.support import ROOT, collect, run_flarebus, start_flarebus

HOT_PROGRAM = textwrap.dedent("""
    import sys, time
    import flarebus.samplers.stack
    flarebus.samplers.stack.start(source="hotprog", nats=sys.argv[1], rate=200, interval=0.25)

    def hot_function():
        total = 0
        for i in range(20000):
            total += i * i
        return total

    def cool_function():
        return sum(range(100))

    def main():
        end = time.monotonic() + float(sys.argv[2])
        while time.monotonic() < end:
            hot_function()
            cool_function()

    main()
""")


def _share(tree_value: float, node_value: float) -> float:
    return node_value / tree_value if tree_value else 0.0


def _hot_value(samples: list[StackSample]) -> tuple[float, float]:
    tree = build(samples)
    hot = sum(n.value for n in tree.find("__main__.hot_function"))
    return tree.value, hot


async def test_two_lines_make_a_program_show_up_as_a_flamegraph(
        nc: Client, nats_url: str, tmp_path: Path) -> None:
    """The in-app API publishes on stacks.<source>; the hot function dominates the graph."""
    program = tmp_path / "hot.py"
    program.write_text(HOT_PROGRAM)
    box = await collect(nc, "stacks.hotprog")
    proc = subprocess.Popen([sys.executable, str(program), nats_url, "4"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        await box.wait_for(2, timeout=20)
        flame = run_flarebus("flamegraph", "--nats", nats_url, "--source", "hotprog",
                             "--seconds", "1", "-o", str(tmp_path / "hot.svg"))
    finally:
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    await nc.flush()  # take in every message the program published before it exited
    samples = [s for m in box.messages for s in decode_stacks(m.data)]
    assert all(s.source == "hotprog" and s.unit == "samples" for s in samples)
    total, hot = _hot_value(samples)
    assert _share(total, hot) > 0.5
    tree = build(samples)
    main = tree.children["__main__.<module>"].children["__main__.main"]
    assert main.children["__main__.hot_function"].value > \
        main.children.get("__main__.cool_function", type(main)()).value
    assert flame.returncode == 0, flame.stderr
    svg = ET.fromstring((tmp_path / "hot.svg").read_bytes())
    assert any(g.get("data-n") == "__main__.hot_function" for g in svg.iter()
               if g.get("class") == "f")
    rule = tmp_path / "hot.yaml"
    rule.write_text("rules:\n  - name: hot-path\n"
                    "    stack: {source: hotprog, frame: '*.hot_function', measure: share}\n"
                    "    when: '> 0.3'\n    for: 500ms\n")
    evaluator = Evaluator(load_rules([rule]))
    ordered = sorted(samples, key=lambda s: s.ts or 0)
    fired = [t for s in ordered for t in evaluator.ingest_stacks([s], now=s.ts or 0)]
    assert [t.state for t in fired][:1] == ["firing"]
    assert fired[0].rule == "hot-path" and fired[0].value > 0.3


async def test_flamegraph_recording_stopped_by_a_signal_is_still_written(
        nc: Client, nats_url: str, tmp_path: Path) -> None:
    """`flarebus flamegraph` ends on SIGINT with what it recorded (a run of unknown length)."""
    out = tmp_path / "run.folded"
    proc = start_flarebus("flamegraph", "--nats", nats_url, "--source", "bench", "--seconds",
                          "10m", "-o", str(out))
    assert proc.stderr is not None
    assert "recording stacks.bench" in proc.stderr.readline()  # printed once subscribed
    sample = StackSample(source="bench", stacks=[Stack(["main", "work"], 3.0)], ts=1.0)
    await nc.publish("stacks.bench", encoder.encode(sample))
    await nc.flush()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "1 stack sample(s)" in err
    assert out.read_text().splitlines() == ["main;work 3"]


def test_profiler_samples_other_threads_not_itself() -> None:
    """StackProfiler hands StackSamples to its sink; its own thread never appears."""
    got: list[StackSample] = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, name="spinner")
    worker.start()
    profiler = StackProfiler("unit", got.append, rate=200, interval=0.1, threads=True,
                             labels={"service": "t"})
    profiler.start()
    try:
        while len(got) < 3:
            time.sleep(0.05)
    finally:
        profiler.stop()
        stop.set()
        worker.join()
    tree = build(got)
    assert "thread spinner" in tree.children
    spinner = tree.children["thread spinner"]
    assert any(n.value > 0 for n in spinner.find(f"{__name__}.test_profiler_samples_other"
                                                 "_threads_not_itself.<locals>.spin"))
    assert not any(n.name.startswith("flarebus.samplers.stack_profiler.StackProfiler._run")
                   for _, n in tree.walk())
    assert got[0].labels == {"service": "t"} and got[0].ts is not None


def _park(ready: threading.Event, release: threading.Event) -> None:
    ready.set()
    release.wait()  # the line the sampled stack must name


@pytest.mark.parametrize("lines", [False, True])
def test_snapshots_count_identical_stacks_named_root_first(lines: bool) -> None:
    """Repeated snapshots of a parked thread fold into one Stack, root first, leaf named."""
    ready, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_park, args=(ready, release), name="parked")
    worker.start()
    ready.wait()
    profiler = StackProfiler("unit", lambda s: None, threads=True, lines=lines)
    counts: dict = {}
    try:
        for _ in range(3):
            profiler.sample_once(counts)
    finally:
        release.set()
        worker.join()
    parked = [s for s in profiler.stacks(counts) if s.frames[0] == "thread parked"]
    assert len(parked) == 1 and parked[0].weight == 3.0
    frames = parked[0].frames
    assert frames[1].startswith("threading.Thread._bootstrap")
    park_line = _park.__code__.co_firstlineno + 2
    expected = f"{__name__}._park:{park_line}" if lines else f"{__name__}._park"
    assert expected in frames
    assert frames[-1].startswith("threading.Condition.wait")
    assert all((":" in f) == lines for f in frames[1:])


def test_profiler_rejects_a_bad_source() -> None:
    """A source that is not a subject token is refused at once."""
    from flarebus.errors import SampleError

    with pytest.raises(SampleError, match="not a subject token"):
        StackProfiler("a.b", lambda s: None)


async def test_other_process_without_py_spy_says_so_clearly() -> None:
    """The stack sampler for a PID names py-spy and the two-line alternative when missing."""
    sampler = PySpySampler()
    with pytest.raises(PluginError) as info:
        await sampler.init({"pid": 1, "py_spy": "/nonexistent/py-spy"})
    assert "py-spy is not installed" in str(info.value)
    assert "flarebus.samplers.stack.start" in PY_SPY_MISSING


def test_parse_raw_reads_py_spy_output() -> None:
    """py-spy's raw (folded) lines become root-first Stacks."""
    stacks = parse_raw("<module> (a.py:8);main (a.py:7);hot (a.py:4) 49\nbad line\n")
    assert len(stacks) == 1
    assert stacks[0].frames == ["<module> (a.py:8)", "main (a.py:7)", "hot (a.py:4)"]
    assert stacks[0].weight == 49


def _py_spy_missing() -> bool:
    try:
        find_py_spy()
    except PluginError:
        return True
    return False


# py-spy is a test dependency; only a developer's ad-hoc venv may lack it, never CI
@pytest.mark.skipif(_py_spy_missing() and not os.environ.get("CI"),
                    reason="py-spy is not installed (pip install '.[test]')")
async def test_py_spy_samples_another_process(tmp_path: Path) -> None:
    """With py-spy installed, another process' hot function shows up."""
    program = tmp_path / "spin.py"
    program.write_text("def hot():\n    return sum(range(10000))\nwhile True:\n    hot()\n")
    proc = subprocess.Popen([sys.executable, str(program)])
    try:
        time.sleep(0.3)
        samples = await collect_once(PySpySampler(), {"pid": proc.pid, "window": 1})
    finally:
        proc.kill()
        proc.wait()
    tree = build(samples)  # type: ignore[arg-type]
    assert any(n.name.startswith("hot (") for _, n in tree.walk())
