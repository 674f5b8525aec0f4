"""The layout draws the architecture: the shared contracts import no role, roles import one way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.support import ROOT, package_roots

#: package -> the flarebus packages its modules may import (besides the shared root modules)
ALLOWED: dict[str, set[str]] = {
    "flarebus": {"flarebus.schemas"},
    "flarebus.engine": {"flarebus.engine", "flarebus.schemas"},
    "flarebus.samplers": {"flarebus.samplers"},
    "flarebus.actions": {"flarebus.actions", "flarebus.samplers"},
    # the console reads the shared contracts only (the summary Structs are in flarebus/)
    "flarebus.web": {"flarebus.web"},
    "flarebus.cli": {"flarebus.cli", "flarebus.engine", "flarebus.actions", "flarebus.samplers",
                     "flarebus.rules", "flarebus.schemas", "flarebus.web"},
    "flarebus.rules": set(),
    "flarebus.schemas": set(),
}
#: modules above every layer: `python -m flarebus` runs the CLI, and the schema generator
#: reads the Structs of every layer (a build tool: `flarebus.schemas.load` never imports it)
TOOLS = {ROOT / "flarebus" / "__main__.py", ROOT / "schemas" / "generate.py"}


def shared_modules() -> set[str]:
    return {f"flarebus.{p.stem}" for p in (ROOT / "flarebus").glob("*.py")} | {"flarebus"}


def modules_of(package: str, folder: Path) -> Iterator[Path]:
    if package == "flarebus":
        yield from folder.glob("*.py")  # the mapped folders inside are other packages
    else:
        yield from folder.rglob("*.py")


def imported(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "flarebus":  # `from flarebus import rules` imports flarebus.rules
                yield from ((node.lineno, f"flarebus.{alias.name}") for alias in node.names)
            else:
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)


def package_of(module: str) -> str | None:
    """The mapped flarebus package a module belongs to, or None for the shared root modules."""
    for package in sorted(package_roots(), key=len, reverse=True):
        if package != "flarebus" and (module == package or module.startswith(package + ".")):
            return package
    return None


def file_violations(package: str, path: Path) -> list[str]:
    """Each import in ``path`` (a module of ``package``) that the layering forbids."""
    shared = shared_modules()
    found = []
    for line, module in imported(path):
        if not module.startswith("flarebus") or module in shared:
            continue
        target = package_of(module)
        if target is not None and target not in ALLOWED[package]:
            found.append(f"{path.name}:{line}: {package} imports {module}")
    return found


def violations() -> list[str]:
    return [f"{folder}/{v}" for package, folder in package_roots().items()
            for path in modules_of(package, ROOT / folder) if path not in TOOLS
            for v in file_violations(package, path)]


def test_no_module_imports_against_the_layering() -> None:
    """Shared contracts import no role; engine, samplers and web import no other role; only
    cli imports every role."""
    assert violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """A shared module importing the engine, or a sampler importing actions, is reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("from flarebus.engine.language import evaluator\n"
                     "from flarebus import events, actions\n"
                     "import flarebus.errors\n")
    assert file_violations("flarebus", probe) == [
        "probe.py:1: flarebus imports flarebus.engine.language",
        "probe.py:2: flarebus imports flarebus.actions"]
    assert file_violations("flarebus.samplers", probe) == [
        "probe.py:1: flarebus.samplers imports flarebus.engine.language",
        "probe.py:2: flarebus.samplers imports flarebus.actions"]


def test_no_module_is_over_400_lines() -> None:
    """Small modules with one job each: none of the package is over ~400 lines."""
    long = [f"{path.relative_to(ROOT)}: {n} lines"
            for package, folder in package_roots().items()
            for path in modules_of(package, ROOT / folder)
            if (n := len(path.read_text().splitlines())) > 400]
    assert long == []
