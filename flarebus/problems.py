"""How a problem in a user's file is worded and ordered, whichever check found it.

Rule and config files are judged by msgspec (flarebus.typed), a plugin's config
by msgspec or by the JSON Schema the plugin declares (flarebus.validation).
Both report through these helpers, so a user reads one style everywhere:
``file:line:col: field: what is wrong``, in file order.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from flarebus.errors import Problem

#: Type names as JSON Schema (``string``) and msgspec (``str``) spell them, in a user's words.
TYPE_WORDS = {
    "object": "a mapping", "array": "a list", "string": "a string", "str": "a string",
    "number": "a number", "float": "a number", "integer": "an integer", "int": "an integer",
    "boolean": "true or false", "bool": "true or false", "null": "null",
}


def describe_path(path: Sequence[str | int]) -> str:
    """`for`, `labels.host`, `escalate[0].when`: the field as a user wrote it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def short(value: Any) -> str:
    """A value as it appears in a message: JSON, cut at 60 characters."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def type_words(names: Iterable[str]) -> str:
    """``["string", "null"]`` -> "a string or null"."""
    return " or ".join(TYPE_WORDS.get(name, name) for name in names)


def unknown_key(key: str, allowed: Iterable[str]) -> str:
    """The message for a misspelled or foreign key: a suggestion when one is close."""
    choices = sorted(allowed)
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f"unknown key; did you mean {close[0]!r}?" if close \
        else f"unknown key; allowed: {', '.join(choices)}"


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File order: by file, line, column; duplicates (same place, same text) once."""
    unique = {(p.file, p.line, p.column, p.message): p for p in problems}
    return [unique[k] for k in sorted(unique)]
