"""The JSON Schemas (Draft 2020-12) of flarebus' files and messages, shipped as package data.

``load("rule")`` returns ``schemas/rule.schema.json`` as a dict.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

NAMES = ("metric_sample", "stack_sample", "trigger", "config", "rule")


@cache
def _text(name: str) -> str:
    return resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")


def load(name: str) -> dict[str, Any]:
    """The schema called ``name`` (see NAMES), freshly parsed so callers may not share state."""
    schema: dict[str, Any] = json.loads(_text(name))
    return schema
