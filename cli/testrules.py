"""``flarebus test FILE...``: run rule unit tests (see engine/language/ruletest.py, docs/rules.md).

Prints one line per file, expected vs got for each failure; exit 1 on any
failure or invalid test file.
"""

from __future__ import annotations

import argparse
import sys

from flarebus.errors import InvalidFileError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "test", help="run rule unit tests (like promtool test rules)",
        description=__doc__,
        epilog="example:\n  flarebus test rules/tests/*.yaml")
    parser.add_argument("files", metavar="TESTFILE", nargs="+",
                        help="test files, or directories of them")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from flarebus.engine.language.rulepaths import expand_paths
    from flarebus.engine.language.ruletest import run_test_file

    files, missing = expand_paths(args.files)
    if missing:
        print(str(InvalidFileError(missing)), file=sys.stderr)
    failed = bool(missing)
    total = failures = 0
    for path in files:
        try:
            result = run_test_file(path)
        except InvalidFileError as exc:
            print(str(exc), file=sys.stderr)
            failed = True
            continue
        total += result.tests
        failures += len(result.failures)
        status = "FAILED" if result.failures else "SUCCESS"
        print(f"{result.file}: {status} ({result.tests} checks, {len(result.failures)} failed)")
        for failure in result.failures:
            print(failure)
    print(f"{total} checks, {failures} failed")
    return 1 if failed or failures else 0
