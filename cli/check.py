"""``flarebus check PATH...``: validate rule files, rule test files and config files.

Files or directories; inside a directory, each YAML file is checked as what it
is (a config file by its nats/engine/worker/... keys, a test file by its
``tests:`` key, else a rule file). Every problem of every file is printed, one
``file:line:col: rule 'x': ...`` line each; exit 1 on any. ``--config FILE``
checks that config file too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flarebus.cli.options import existing_file
from flarebus.errors import InvalidFileError, UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check", help="validate rule files (and config, rule tests); exit 1 on any error",
        description=__doc__,
        epilog="examples:\n  flarebus check rules/\n  flarebus check --config flarebus.yaml "
               "rules/cpu.yaml")
    parser.add_argument("paths", metavar="PATH", nargs="*", help="files or directories")
    parser.add_argument("--config", metavar="FILE", type=existing_file,
                        help="a config file to validate as well")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.paths and not args.config:
        raise UsageError("give a PATH (rule files or directories) or --config FILE")
    from flarebus.config import load_config
    from flarebus.engine.language.rulefile import file_kind, load_rules, with_yaml_hint
    from flarebus.engine.language.rulepaths import expand_paths
    from flarebus.engine.language.ruletest import load_test_file
    from flarebus.problems import sort_problems
    from flarebus.yamlfile import load_yaml

    files, problems = expand_paths(args.paths)
    rule_files: list[Path] = []
    configs = [Path(args.config)] if args.config else []
    tests: list[Path] = []
    for path in files:
        try:
            kind = file_kind(load_yaml(path).data)
        except InvalidFileError as exc:
            problems.extend(with_yaml_hint(exc.problems, path))
            continue
        {"rules": rule_files, "config": configs, "test": tests}[kind].append(path)
    rules = None
    if rule_files:
        try:
            rules = load_rules(rule_files)
        except InvalidFileError as exc:
            problems.extend(exc.problems)
    for path in configs:
        try:
            load_config(path, env={})
        except InvalidFileError as exc:
            problems.extend(exc.problems)
    for path in tests:
        try:
            load_test_file(path)
        except InvalidFileError as exc:
            problems.extend(exc.problems)
    if problems:
        for problem in sort_problems(problems):
            print(problem)
        print(f"{_count(len(set(sort_problems(problems))), 'problem')} found", file=sys.stderr)
        return 1
    parts = []
    if rules is not None:
        parts.append(f"{_count(len(rules.rules), 'rule')} ({len(rules.enabled())} enabled) in "
                     f"{_count(len(rules.files), 'file')}")
    if configs:
        parts.append(_count(len(configs), "config file"))
    if tests:
        parts.append(_count(len(tests), "rule test file"))
    print("ok: " + ", ".join(parts or ["nothing to check"]))
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
