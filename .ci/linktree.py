"""Build a link tree of the installed layout, for tools that cannot follow the editable install.

setup.py maps the repository's folders onto ``flarebus.*`` (``engine/`` is
``flarebus.engine``); the editable install resolves that with an import hook,
which static tools (mypy, pyright) do not run. This script writes
``DEST/flarebus/`` with a symlink per module of ``flarebus/`` and one per
mapped folder, so ``DEST`` holds the package exactly as the wheel lays it out
while every file is still the checkout's own.

    python .ci/linktree.py DEST
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def roots() -> dict[str, str]:
    """``ROOTS`` from setup.py, read without running setuptools."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "ROOTS" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    raise SystemExit("setup.py has no ROOTS mapping")


def build(dest: Path) -> Path:
    package = dest / "flarebus"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    mapping = roots()
    for entry in (REPO / mapping.pop("flarebus")).iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        link = package.joinpath(*name.split(".")[1:])
        link.symlink_to(REPO / folder, target_is_directory=True)
    return package


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(build(Path(sys.argv[1]).resolve()))
