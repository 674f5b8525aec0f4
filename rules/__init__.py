"""The packaged rule files: the default set `flarebus up` loads, commented examples, rule tests.

``rules/default.yaml`` is the default set. ``rules/examples/`` shows every feature,
``rules/tests/`` holds `flarebus test` files for them. All of them pass
``flarebus check``.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def default_rules_dir() -> Path:
    """The packaged ``rules/`` directory (it ships inside the wheel).

    Note that loading the whole directory also loads ``examples/`` (test files
    are skipped); `flarebus up` should load :func:`default_rules_file` alone.
    """
    return _HERE


def default_rules_file() -> Path:
    """``rules/default.yaml``: the rule set `flarebus up` runs against the system sampler."""
    return _HERE / "default.yaml"


def tests_dir() -> Path:
    """``rules/tests/``: the `flarebus test` files of the packaged rules."""
    return _HERE / "tests"
