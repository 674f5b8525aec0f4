"""Which files a list of rule paths names: the one walker behind load, check, test and reload.

A path is a file (taken as given, whatever its suffix) or a directory (every
``*.yaml``/``*.yml`` file under it, recursively, in sorted order, so rules load
in the same order on every machine). Hidden entries under a directory (a name
starting with ``.``) are skipped: a Kubernetes ConfigMap volume holds each file
three times, as ``name`` and under ``..data/`` and ``..<timestamp>/``, and an
editor's ``.name.yaml.swp``-style leftovers are not rules either.
``flarebus check``, ``flarebus test``, the engine's loader and its hot-reload
poller all walk with it, so a file the engine loads is the file ``check``
validated and the file whose change triggers a reload. A path that does not
exist is a Problem, reported with the others rather than raised.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

from flarebus.errors import Problem

RULE_SUFFIXES: Final = (".yaml", ".yml")


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Files as given, and ``*.yaml``/``*.yml`` under directories (recursive, sorted)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*")
                                if p.suffix in RULE_SUFFIXES and p.is_file()
                                and not _hidden(p.relative_to(path))))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(raw), 1, 1, "no such file or directory"))
    return files, problems
