"""The command line as a whole: what each start imports, flag mistakes as usage errors, help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from flarebus.cli import options
from flarebus.cli.main import COMMANDS, build_parser
from tests.support import ROOT, run_flarebus

#: What no command may import unless it runs a role: each costs 20-70 ms of start-up.
ROLE_LIBRARIES = {"opentelemetry", "apscheduler", "nats", "psutil", "prometheus_client"}
#: What printing help needs none of, on top of the above.
HELP_LIBRARIES = ROLE_LIBRARIES | {"msgspec", "yaml", "jsonschema", "asyncio"}


def imported(*args: str, cwd: Path = ROOT) -> set[str]:
    """The top-level packages `python -X importtime -m flarebus ARGS` imports (exit 0 asserted)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "flarebus", *args],
                            capture_output=True, text=True, cwd=cwd, timeout=60, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "flarebus" in names  # the output was importtime's
    return names


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser, complete (with the arguments it adds when parsed)."""
    parser = build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.complete() if isinstance(p, options.CommandParser) else p
            for name, p in sub.choices.items()}


class TestStartUp:
    """Commands import what they run, nothing more (pinned by module, never by time)."""

    @pytest.mark.parametrize("args", [["--help"], ["publish", "--help"], ["check", "--help"],
                                      ["replay", "--help"], ["engine", "--help"],
                                      ["up", "--help"], ["tail", "--help"]])
    def test_help_imports_no_third_party_library(self, args: list[str]) -> None:
        """`flarebus [COMMAND] --help` builds every parser from the standard library alone."""
        assert imported(*args) & HELP_LIBRARIES == set()

    def test_check_imports_no_role_library(self) -> None:
        """`flarebus check FILE` needs the rule language (YAML, msgspec, schemas), no role."""
        assert imported("check", str(ROOT / "rules" / "default.yaml")) & ROLE_LIBRARIES == set()

    def test_replay_imports_no_role_library(self, tmp_path: Path) -> None:
        """`flarebus replay` evaluates offline: no NATS, no scheduler, no telemetry."""
        samples = tmp_path / "samples.jsonl"
        samples.write_text('{"name": "cpu.usage", "value": 1, "ts": 1}\n')
        names = imported("replay", "--rules", str(ROOT / "rules" / "default.yaml"), str(samples))
        assert names & ROLE_LIBRARIES == set()

    def test_publish_imports_nats_and_nothing_else_heavy(self, nats_url: str,
                                                        tmp_path: Path) -> None:
        """`flarebus publish` with flags needs nats-py and msgspec; no YAML, schema, tracing."""
        names = imported("publish", "cli.startup", "1", "--nats", nats_url, cwd=tmp_path)
        assert "nats" in names
        assert names & (ROLE_LIBRARIES - {"nats"} | {"yaml", "jsonschema"}) == set()

    def test_nats_is_imported_without_aiohttp_which_loads_on_use(self, tmp_path: Path) -> None:
        """nats-py's transport gets a stand-in for aiohttp (WebSocket only) that imports on use."""
        code = ("import sys; from flarebus.cli.deferred import defer_aiohttp; defer_aiohttp(); "
                "import nats.aio.client, nats.aio.transport as t; "
                "print('aiohttp' in sys.modules); "
                "print(t.aiohttp.ClientSession.__module__); print('aiohttp' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, check=True).stdout.split()
        assert out == ["False", "aiohttp.client", "True"]


class TestUsageErrors:
    """A bad flag is argparse's usage error, exit 2, before anything connects or starts."""

    @pytest.mark.parametrize(("args", "message"), [
        (["engine", "--shard", "3/2"], "argument --shard: '3/2' is not a shard (use i/N"),
        (["engine", "--shard", "one"], "argument --shard: 'one' is not a shard"),
        (["engine", "--checkpoint-interval", "0"], "argument --checkpoint-interval: '0': must"),
        (["engine", "--processes", "0"], "argument --processes: '0': must be 1 or more"),
        (["engine", "--processes", "2", "--shard", "0/2"], "--processes runs coordinated"),
        (["up", "--engines", "0"], "argument --engines: '0': must be 1 or more"),
        (["engine", "--nats", "http://x:4222"], "argument --nats: 'http://x:4222' is not a NATS"),
        (["publish", "cpu.usage", "1", "--nats", "host:port"], "'host:port' is not a NATS"),
        (["tail", "--since", "10 min"], "argument --since: '10 min' is not a duration"),
        (["tail", "--rule", "a.b"], "argument --rule: 'a.b' is not a subject token"),
        (["tail", "-n", "0"], "argument -n/--count: '0': must be 1 or more"),
        (["up", "--status-every", "soon"], "argument --status-every: 'soon' is not a duration"),
        (["worker", "--concurrency", "-4"], "argument --concurrency: '-4': must be 1 or more"),
        (["sample", "system", "--interval", "0s"], "argument --interval: '0s': must be more"),
        (["sample", "system", "-l", "env"], "argument -l/--label: 'env': use KEY=VALUE"),
        (["nats", "--port", "70000"], "argument --port: '70000' is not a port"),
        (["replay", "--rules", "r.yaml", "--until", "later"], "argument --until: 'later' is not"),
        (["flamegraph", "-o", "x.svg", "--seconds", "-1"], "argument --seconds: '-1'"),
        (["flamegraph", "-o", "x.svg"], "error: --source: name the stack source"),
        (["publish", "m", "1", "--config", "missing.yaml"], "--config: 'missing.yaml': no such"),
        (["status", "--tls-ca", "missing.pem"], "argument --tls-ca: 'missing.pem': no such file"),
        (["flamegraph", "-o", "x.svg", "--input", "missing"], "--input: 'missing': no such"),
        (["replay", "--rules", "r.yaml", "missing.jsonl"], "error: SAMPLES: 'missing.jsonl'"),
        (["check"], "error: give a PATH"),
        (["replay", "--rules", "r.yaml"], "error: give SAMPLES"),
    ])
    def test_bad_flag_exits_2_with_usage(self, args: list[str], message: str) -> None:
        """The command's usage line, then argparse's message naming the flag."""
        result = run_flarebus(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"usage: flarebus {args[0]}")
        assert message in result.stderr
        assert "<settings>" not in result.stderr and "Traceback" not in result.stderr


class TestOtherErrors:
    """An error nothing names in particular is still one line, exit 1; --debug adds why."""

    def test_os_error_is_one_line(self, tmp_path: Path) -> None:
        """A data dir that is a file: the path and the OS' reason, no traceback."""
        afile = tmp_path / "afile"
        afile.write_text("")
        result = run_flarebus("up", "--data-dir", str(afile), "--no-sampler", timeout=30)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"flarebus up: {afile}/nats: Not a directory "
                                         "(--debug shows the traceback)")
        debug = run_flarebus("--debug", "up", "--data-dir", str(afile), "--no-sampler",
                             timeout=30)
        assert debug.returncode == 1 and "Traceback" in debug.stderr, debug.stderr


class TestFlagTypes:
    """The type= functions accept what users write and normalise it."""

    @pytest.mark.parametrize(("text", "seconds"), [("5", 5.0), ("0.5", 0.5), ("1m30s", 90.0),
                                                   ("500ms", 0.5), ("0", 0.0)])
    def test_durations_take_units_or_plain_seconds(self, text: str, seconds: float) -> None:
        """`--checkpoint-interval 5` keeps working beside `5s`."""
        assert options.duration(text) == seconds

    def test_nats_values_split_on_commas_and_repeat(self) -> None:
        """`--nats a,b --nats c` is three servers; bare host:port is accepted as nats-py does."""
        args = build_parser().parse_args(["status", "--nats", "nats://a:4222, b:4222",
                                          "--nats", "tls://c:4222"])
        assert options.nats_overrides(args)["servers"] == ["nats://a:4222", "b:4222",
                                                           "tls://c:4222"]

    def test_shard_and_labels_come_out_ready_to_use(self) -> None:
        """--shard is the normalised i/N text, -l a list of (key, value) pairs."""
        args = build_parser().parse_args(["engine", "--shard", " 1/4 "])
        assert args.shard == "1/4"
        args = build_parser().parse_args(["publish", "m", "1", "-l", "a=b=c", "-l", "e="])
        assert dict(args.label) == {"a": "b=c", "e": ""}


class TestHelp:
    """--help teaches: examples for every command, defaults stated."""

    @pytest.mark.parametrize("name", list(COMMANDS))
    def test_each_command_shows_examples(self, name: str) -> None:
        """Every subcommand's help ends with at least one example command line."""
        parser = command_parsers()[name]
        assert parser.epilog and "example" in parser.epilog
        assert f"flarebus {name}" in parser.epilog

    def test_every_default_is_stated(self) -> None:
        """A flag with a default shows it: in its own words or as '(default: ...)'."""
        for name, parser in command_parsers().items():
            formatter = parser._get_formatter()
            for action in parser._actions:
                if action.option_strings and action.default not in (
                        None, False, [], argparse.SUPPRESS):
                    text = formatter._expand_help(action)
                    assert "default" in text, f"flarebus {name} {action.option_strings[0]}"

    def test_sample_help_lists_the_samplers_options(self) -> None:
        """The options added when `sample` is parsed are in its --help."""
        result = run_flarebus("sample", "--help")
        assert result.returncode == 0
        assert "--url URL" in result.stdout and "[prometheus]" in result.stdout

    def test_sample_help_names_every_sampler_of_a_flag(self) -> None:
        """A flag several samplers take (--prefix) names them all, not only the first."""
        from flarebus.cli.main import build_parser, command_parser

        sample = command_parser(build_parser(), "sample")
        sample.complete()  # type: ignore[attr-defined]
        helps = {a.option_strings[0]: a.help or "" for a in sample._actions if a.option_strings}
        assert helps["--prefix"].endswith("[prometheus, stdin, exec]"), helps["--prefix"]
        assert helps["--pid"].endswith("[process, stack]"), helps["--pid"]

    def test_top_level_help_starts_with_up(self) -> None:
        """`flarebus --help` lists every command and shows where to begin."""
        result = run_flarebus("--help")
        assert result.returncode == 0
        assert all(name in result.stdout for name in COMMANDS)
        assert "flarebus up " in result.stdout and "examples:" in result.stdout

