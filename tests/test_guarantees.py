"""docs/operations.md "What flarebus guarantees": every test it names exists."""

from __future__ import annotations

import importlib
import re

from tests.support import ROOT

SECTION = "## What flarebus guarantees"


def named_tests() -> list[str]:
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"(test_\w+\.py(?:::\w+)*)", section)


def test_every_named_test_exists() -> None:
    """Each `file.py::Class::test` of the guarantees table resolves to a test in tests/."""
    names = named_tests()
    assert len(names) >= 20, names
    missing = []
    for name in names:
        module_name, *parts = name.split("::")
        obj: object = importlib.import_module(f"tests.{module_name[:-3]}")
        for part in parts:
            obj = getattr(obj, part, None)
            if obj is None:
                missing.append(name)
                break
    assert missing == [], f"{len(missing)} of {len(names)} named tests do not exist: {missing}"
