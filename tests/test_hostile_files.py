"""Hostile input files: each refused with a file:line:col reason, cheaply, and never fatal.

Each file goes through the real ``flarebus`` command in a subprocess whose
address space is capped (``resource.setrlimit``): an unbounded expansion then
fails the test by an error (MemoryError, a killed process), not by taking
long. The timeout is generous on purpose: these tests assert what is
refused, not how fast.
"""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
from pathlib import Path

import pytest
from nats.aio.client import Client

from flarebus.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, MAX_SCALAR
from tests.engine_support import EngineProcess, stream_triggers, wait_triggers
from tests.support import ROOT, flarebus_cmd
from tests.test_engine import rule, rule_file, send

#: Far above what flarebus needs to check a file (~100 MB), far below 3.2 GB of laughs.
MEMORY_LIMIT = 768 * 1024 * 1024

HEAD = 'rules:\n  - name: lol\n    metric: cpu\n    when: "> 1"\n'


def billion_laughs() -> str:
    """Seven levels of nine aliases inside ``annotations:`` (4.8 million values)."""
    lines = [HEAD + "    annotations:", '      a0: &a0 "lol"']
    for level in range(1, 8):
        lines.append(f"      a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def deep_nesting() -> str:
    """10,000 nested flow sequences as a rule's labels."""
    return HEAD + "    labels: " + "[" * 10_000 + "]" * 10_000 + "\n"


def huge_scalar() -> str:
    """A 3 MB annotation: under the file size limit, over the value limit."""
    return HEAD + "    annotations:\n      summary: " + "x" * 3_000_000 + "\n"


def write_big(path: Path) -> None:
    """A valid-looking 50 MB rule file (50,000 rules' worth, over and over)."""
    chunk = ("".join(rule(f"r{i}", "cpu") for i in range(1000))).encode()
    with path.open("wb") as out:
        out.write(b"rules:\n")
        while out.tell() < 50 * 1024 * 1024:
            out.write(chunk)


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_capped(*args: str, stdin: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`flarebus ARGS` with its memory capped; output captured."""
    data = stdin.read_text() if stdin else ""
    return subprocess.run(flarebus_cmd(*args), input=data, capture_output=True, text=True,
                          cwd=ROOT, timeout=120, preexec_fn=limited, check=False)


def problem_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one problem `flarebus check` printed (``file:line:col: ...``)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if ": " in line]
    assert len(lines) == 1, done.stdout + done.stderr
    return lines[0]


class TestRuleFiles:
    """`flarebus check` refuses each hostile rule file at its line and column."""

    def test_billion_laughs(self, tmp_path: Path) -> None:
        """The first alias is refused where it is used, naming the value it repeats."""
        path = tmp_path / "laughs.yaml"
        path.write_text(billion_laughs())
        done = run_capped("check", str(path))
        assert done.returncode == 1, done.stderr
        assert problem_line(done) == (
            f"{path}:7:7: YAML aliases are not supported (this one repeats the value at "
            "line 6, column 11): write the value out")

    def test_merge_key(self, tmp_path: Path) -> None:
        """A merge key is an alias too: refused at the key."""
        path = tmp_path / "merge.yaml"
        path.write_text('base: &b {metric: cpu, when: "> 1"}\nrules:\n  - <<: *b\n'
                        "    name: m\n")
        done = run_capped("check", str(path))
        assert problem_line(done) == (
            f"{path}:3:5: YAML merge keys (<<: *name) are not supported: write the keys out")

    def test_50_mb_file(self, tmp_path: Path) -> None:
        """A file over the size limit is refused before it is parsed."""
        path = tmp_path / "big.yaml"
        write_big(path)
        done = run_capped("check", str(path))
        assert done.returncode == 1, done.stderr
        assert problem_line(done) == (
            f"{path}:1:1: more than {MAX_FILE_BYTES // 2**20} MiB: rule, config and test "
            "files are refused past that size")

    def test_10000_deep_nesting(self, tmp_path: Path) -> None:
        """Nesting past the limit is refused where it goes too deep."""
        path = tmp_path / "deep.yaml"
        path.write_text(deep_nesting())
        done = run_capped("check", str(path))
        assert done.returncode == 1, done.stderr
        assert re.fullmatch(rf"{re.escape(str(path))}:5:\d+: nested deeper than {MAX_DEPTH} "
                            "levels", problem_line(done))

    def test_huge_scalar(self, tmp_path: Path) -> None:
        """A value over the length limit is refused at the value."""
        path = tmp_path / "scalar.yaml"
        path.write_text(huge_scalar())
        done = run_capped("check", str(path))
        assert problem_line(done) == (
            f"{path}:6:16: a value of 3,000,000 characters: more than the {MAX_SCALAR:,} "
            "allowed")


    def test_huge_format_width(self, tmp_path: Path) -> None:
        """A template asking for a 200 MB field is refused at the annotation, not rendered."""
        path = tmp_path / "width.yaml"
        path.write_text('rules:\n  - name: w\n    metric: cpu\n    when: "> 1"\n'
                        '    annotations:\n      summary: "{value:>200000000}"\n')
        done = run_capped("check", str(path))
        assert done.returncode == 1, done.stderr
        line = problem_line(done)
        assert line.startswith(f"{path}:6:") and "width or precision over 256" in line, line


class TestOtherFiles:
    """Config and rule test files share the loader, and so its limits."""

    def test_config_file(self, tmp_path: Path) -> None:
        """A billion-laughs config file stops the command with the problem, exit 1."""
        config = tmp_path / "flarebus.yaml"
        config.write_text("engine:\n  " + billion_laughs().replace("\n", "\n  "))
        done = run_capped("publish", "cpu", "1", "--config", str(config))
        assert done.returncode == 1, done.stderr
        assert "YAML aliases are not supported" in done.stderr, done.stderr

    def test_rule_test_file(self, tmp_path: Path) -> None:
        """`flarebus test` refuses a deep test file at its position."""
        path = tmp_path / "t.test.yaml"
        path.write_text("rule_files: [r.yaml]\ntests:\n  - name: t\n    input_series: "
                        + "[" * 10_000 + "]" * 10_000 + "\n")
        done = run_capped("test", str(path))
        assert done.returncode == 1, done.stderr
        assert f"nested deeper than {MAX_DEPTH} levels" in done.stderr, done.stderr


class TestSampleFiles:
    """Sample lines are bounded one by one (files may be long; lines may not)."""

    def test_50_mb_line(self, tmp_path: Path) -> None:
        """A 50 MB line is skipped with its line number; the next line still replays."""
        rules = rule_file(tmp_path / "r.yaml", rule("sl", "cpu", when="> 1"))
        samples = tmp_path / "s.jsonl"
        samples.write_text('{"name":"cpu","value":5,"labels":{"a":"' + "x" * 50_000_000
                           + '"}}\n{"name":"cpu","value":5,"ts":1}\n')
        done = run_capped("replay", "--rules", str(rules), str(samples))
        assert done.returncode == 1, done.stderr
        assert f"{samples}:1: line longer than 1,048,576 bytes: skipped" in done.stderr
        assert '"rule":"sl"' in done.stdout  # line 2 fired

    def test_deep_line(self, tmp_path: Path) -> None:
        """10,000-deep nesting in a sample is a type error at the first wrong level."""
        rules = rule_file(tmp_path / "r.yaml", rule("sd", "cpu"))
        samples = tmp_path / "s.jsonl"
        samples.write_text('{"name":"cpu","value":1,"labels":' + "[" * 10_000
                           + "]" * 10_000 + "}\n")
        done = run_capped("replay", "--rules", str(rules), str(samples))
        assert f"{samples}:1: Expected `object`, got `array` - at `$.labels`" in done.stderr

    def test_publish_long_line(self, tmp_path: Path, nats_url: str) -> None:
        """`flarebus publish -` refuses an over-long line by number and sends nothing of it."""
        samples = tmp_path / "s.jsonl"
        samples.write_text('{"name":"cpu","value":1}\n{"name":"cpu","value":1,"labels":{"a":"'
                           + "x" * 5_000_000 + '"}}\n')
        done = run_capped("publish", "-", "--nats", nats_url, stdin=samples)
        assert done.returncode == 1, done.stderr
        assert "<stdin>:2: line longer than 1,048,576 bytes: skipped" in done.stderr


class TestEngineReload:
    """A hostile file dropped into a running engine's rules directory."""

    @pytest.mark.parametrize("make", [billion_laughs, deep_nesting, huge_scalar],
                             ids=["laughs", "deep", "scalar"])
    async def test_reload_keeps_old_rules(self, make: object, nc: Client, nats_url: str,
                                          tmp_path: Path) -> None:
        """The reload is rejected with the file's problem; the old rules keep firing."""
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir()
        rule_file(rules_dir / "ok.yaml", rule(f"hr-{make.__name__}", f"hr.{make.__name__}"))
        engine = EngineProcess(nats_url, [rules_dir]).start()
        try:
            mark = len(engine.lines)
            hostile = rules_dir / "hostile.yaml"
            hostile.write_text(make())  # type: ignore[operator]
            line = engine.wait_for_log(re.escape(str(hostile)) + r":\d+:\d+: ", 30, after=mark)
            assert any(word in line for word in ("alias", "nested", "characters")), line
            engine.wait_for_log("rejected", after=mark)
            await send(nc, f"hr.{make.__name__}", 99, host="after")
            await wait_triggers(nc, f"triggers.hr-{make.__name__}", 1)
            await asyncio.sleep(0.2)
            got = await stream_triggers(nc, f"triggers.hr-{make.__name__}")
            assert [t.labels["host"] for t in got] == ["after"]
            assert engine.proc is not None and engine.proc.poll() is None
        finally:
            engine.stop_ok()
