"""Built-in samplers end to end: system, process, exec, stdin and a config file's samplers."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

from nats.aio.client import Client

from flarebus.events import MetricSample, decode_metrics
from flarebus.samplers.command import ExecSampler, LineParser
from flarebus.samplers.runtime import collect_once
from flarebus.samplers.system import ProcessSampler
from tests.support import collect, run_flarebus, start_flarebus


async def _samples(box_messages: list) -> list[MetricSample]:  # type: ignore[type-arg]
    return [s for m in box_messages for s in decode_metrics(m.data)]


async def test_flarebus_sample_system_publishes_what_the_default_rules_need(
        nc: Client, nats_url: str) -> None:
    """`flarebus sample system` publishes cpu, memory, load1 and the heartbeat, labelled host."""
    box = await collect(nc, "metrics.flarebus.heartbeat")
    everything = await collect(nc, "metrics.system.>")
    proc = start_flarebus("sample", "system", "--interval", "200ms", "--nats", nats_url,
                          "-l", "env=test")
    try:
        await box.wait_for(2, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    names = {s.name for s in await _samples(everything.messages)}
    assert {"system.cpu.percent", "system.memory.percent", "system.load1"} <= names
    beat = (await _samples(box.messages))[0]
    assert beat.value == 1 and beat.labels["host"] and beat.labels["env"] == "test"
    assert "sampler system:" in err


async def test_process_sampler_watches_a_pid() -> None:
    """process publishes threads, memory and cpu of the given PID with pid/process labels."""
    samples = await collect_once(ProcessSampler(), {"pid": os.getpid()})
    by_name = {s.name: s for s in samples}  # type: ignore[union-attr]
    assert by_name["process.threads"].value >= 1
    assert by_name["process.memory.rss_bytes"].value > 0
    assert by_name["process.cpu.percent"].labels["pid"] == str(os.getpid())


async def test_exec_sampler_reads_json_lines_and_skips_bad_ones() -> None:
    """Good lines of a command's output become samples; a bad line is counted, not fatal."""
    script = textwrap.dedent("""
        import json
        print(json.dumps({"name": "queue.depth", "value": 12, "labels": {"q": "mail"}}))
        print("this is not json")
        print(json.dumps({"depth": 3, "age": 1.5, "note": "x"}))
    """)
    sampler = ExecSampler()
    samples = await collect_once(sampler, {"command": [sys.executable, "-c", script],
                                           "prefix": "q"})
    got = {(s.name, s.value) for s in samples}  # type: ignore[union-attr]
    assert got == {("queue.depth", 12.0), ("q.depth", 3.0), ("q.age", 1.5)}
    assert sampler.parser.bad_lines == 1


def test_exec_failure_is_reported() -> None:
    """A command exiting non-zero is an error with its stderr."""
    result = run_flarebus("sample", "exec", "--command",
                          f"{sys.executable} -c 'import sys; sys.exit(\"boom\")'",
                          "--once", "--print")
    assert result.returncode == 1
    assert "exited with 1: boom" in result.stderr


def test_line_parser_bare_numbers_need_a_name() -> None:
    """A bare number is a sample of the configured name, else a skipped line."""
    assert LineParser(name="temp").parse(b"21.5")[0] == MetricSample("temp", 21.5)
    parser = LineParser()
    assert parser.parse(b"21.5") == [] and parser.bad_lines == 1


async def test_stdin_sampler_publishes_until_eof(nc: Client, nats_url: str) -> None:
    """`... | flarebus sample stdin` publishes each line and exits at the end of input."""
    box = await collect(nc, "metrics.stdin.temp")
    result = run_flarebus("sample", "stdin", "--name", "stdin.temp", "--nats", nats_url,
                          input="20\n21\nnope\n22\n")
    assert result.returncode == 0, result.stderr
    await box.wait_for(1)
    await nc.flush()  # every message published before the command exited has arrived
    assert sorted(s.value for s in await _samples(box.messages)) == [20.0, 21.0, 22.0]
    assert "skipped" in result.stderr


async def test_config_file_runs_several_samplers(tmp_path: Path, nc: Client,
                                                 nats_url: str) -> None:
    """Without a name, `flarebus sample` runs every entry of the config's samplers: section."""
    config = tmp_path / "flarebus.yaml"
    config.write_text(textwrap.dedent(f"""
        samplers:
          - sampler: system
            interval: 200ms
            labels: {{service: cfgtest}}
          - sampler: exec
            interval: 200ms
            config: {{command: ["{sys.executable}", "-c", "print(7)"], name: cfg.seven}}
    """))
    beats = await collect(nc, "metrics.flarebus.heartbeat")
    sevens = await collect(nc, "metrics.cfg.seven")
    proc = start_flarebus("sample", "--config", str(config), "--nats", nats_url)
    try:
        await sevens.wait_for(1, timeout=20)
        await beats.wait_for(1, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert any(s.labels.get("service") == "cfgtest" for s in await _samples(beats.messages))
    assert (await _samples(sevens.messages))[0].value == 7


def test_flags_of_another_sampler_are_refused() -> None:
    """`flarebus sample system --url X` says system does not take --url."""
    result = run_flarebus("sample", "system", "--url", "http://x", "--print", "--once")
    assert result.returncode == 1
    assert "does not take --url" in result.stderr
