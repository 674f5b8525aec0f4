"""The product as users get it: the wheel, installed (not editable) into a venv of its own.

Every other test runs against the editable checkout, which cannot show a module
or data file the wheel leaves out. ``installed_flarebus()`` builds the wheel
from this checkout and installs it with ``--no-deps`` into a new venv whose
dependencies come from the test venv through a ``.pth`` line (a path added by
a ``.pth`` file is not itself scanned for ``.pth`` files, so the checkout's
editable-install hook does not come along). In CI, ``FLAREBUS_INSTALLED_VENV``
names a venv where ``.ci/run`` ran a plain ``pip install .`` with fresh
dependency resolution, and that venv is used instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.support import ROOT

INSTALLED_VENV_ENV = "FLAREBUS_INSTALLED_VENV"


@dataclass(frozen=True)
class Installed:
    """A venv holding a non-editable install of flarebus."""

    venv: Path
    wheel: Path | None  # None when the venv was made by `.ci/run`

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def flarebus(self, *args: str) -> list[str]:
        """argv of the installed console script, as the Docker image's entrypoint runs it."""
        return [str(self.venv / "bin" / "flarebus"), *args]

    def run(self, argv: list[str], *, cwd: Path, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PLUGIN_DIR")}
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env={**clean, **(env or {})}, check=False)


def tracked_files() -> list[str]:
    """The paths git tracks, relative to the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return [rel for rel in listed if rel]


def tracked_copy(dest: Path) -> Path:
    """The files git tracks (as they are in the work tree), copied to ``dest``.

    The wheel is built from this copy, as from a clean clone: setuptools never
    empties ``build/lib``, so a module deleted from the checkout would otherwise
    still ship from an earlier build's leftovers.
    """
    for rel in tracked_files():
        source = ROOT / rel
        if source.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def build_wheel(dest: Path) -> Path:
    """``pip wheel`` of this checkout's tracked files, as ``pip install .`` builds it."""
    source = tracked_copy(dest.parent / "source")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
                    str(source)], check=True, capture_output=True, text=True)
    (wheel,) = dest.glob("flarebus-*.whl")
    return wheel


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def installed_flarebus(tmp: Path) -> Installed:
    """The CI venv when ``.ci/run`` made one, else a new venv with this checkout's wheel."""
    given = os.environ.get(INSTALLED_VENV_ENV)
    if given:
        return Installed(Path(given).resolve(), None)
    wheel = build_wheel(tmp / "dist")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir),
                                                     "platbase": str(env_dir)}))
    deps = Path(sysconfig.get_path("purelib"))  # the test venv's site-packages
    (site / "flarebus-test-deps.pth").write_text(f"{deps}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"),
                    "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    return Installed(env_dir, wheel)
