"""JSON Schema validation that reports like a compiler, not like a schema dump.

jsonschema's own messages ("is not valid under any of the given schemas")
tell a user nothing about their file. Each error is turned into one line at
the file position of the offending key or value, with a hint where the
schema has one (``x-hint``) and a "did you mean" for misspelled keys.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from flarebus import schemas
from flarebus.errors import Problem
from flarebus.yamlfile import JsonPath, YamlDocument

#: Given the path of an error, the rule (or other named thing) it belongs to.
NameAt = Callable[[JsonPath], str | None]


@cache
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    """The Draft 2020-12 validator for ``schemas/<schema_name>.schema.json``, built once.

    The packaged schemas are not checked against the metaschema here: that took
    longer than validating a rule file (every `flarebus check` paid it), and
    tests/test_contracts.py checks each shipped schema once instead.
    """
    schema = schemas.load(schema_name)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _describe_path(path: JsonPath) -> str:
    """`for`, `labels.host`, `escalate[0].when`: the field as a user wrote it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_names(expected: Any) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "a string",
             "number": "a number", "integer": "an integer", "boolean": "true or false",
             "null": "null"}
    if isinstance(expected, list):
        return " or ".join(names.get(t, t) for t in expected)
    return names.get(expected, str(expected))


def _leaf(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the branch error that most likely describes the mistake."""
    while error.context and not error.schema.get("x-hint"):
        deeper = best_match(error.context)
        if deeper is None:
            break
        error = deeper
    return error


def explain(error: ValidationError) -> tuple[JsonPath, str, bool]:
    """(path, message, points_at_key) for one jsonschema error."""
    error = _leaf(error)
    path: JsonPath = tuple(error.absolute_path)
    field = _describe_path(path)
    prefix = f"{field}: " if field else ""
    hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed] if isinstance(
            error.instance, dict) else []
        key = extras[0] if extras else "?"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        suggestion = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        return (*path, key), f"{_describe_path((*path, key))}: unknown key; {suggestion}", True
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return path, f"{prefix}missing required key {missing!r}", False
    if hint:
        return path, f"{prefix}{_short(error.instance)} {hint}", False
    if kind == "type":
        return path, f"{prefix}expected {_type_names(error.validator_value)}, " \
                     f"got {_short(error.instance)}", False
    if kind == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        return path, f"{prefix}{_short(error.instance)} is not one of: {options}", False
    if kind == "const":
        return path, f"{prefix}must be {_short(error.validator_value)}", False
    if kind == "pattern":
        return path, f"{prefix}{_short(error.instance)} does not match " \
                     f"{error.validator_value}", False
    if kind in {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=",
                 "exclusiveMaximum": "<"}[kind]
        return path, f"{prefix}must be {words} {error.validator_value}, " \
                     f"got {_short(error.instance)}", False
    if kind in {"minItems", "minLength"}:
        return path, f"{prefix}must not be empty" if error.validator_value == 1 else \
            f"{prefix}needs at least {error.validator_value} items", False
    if kind in {"anyOf", "oneOf"}:
        description = error.schema.get("description", "a different value")
        return path, f"{prefix}{_short(error.instance)} is not valid here: " \
                     f"expected {description}", False
    return path, f"{prefix}{error.message}", False


def schema_problems(doc: YamlDocument, schema_name: str,
                    name_at: NameAt | None = None) -> list[Problem]:
    """Every schema violation of ``doc``, in file order, one Problem each."""
    problems = []
    for error in validator(schema_name).iter_errors(doc.data):
        path, message, at_key = explain(error)
        rule = name_at(path) if name_at else None
        problems.append(doc.problem(path, message, key=at_key, rule=rule))
    return sort_problems(problems)


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """File order: by file, line, column; duplicates (same place, same text) once."""
    unique = {(p.file, p.line, p.column, p.message): p for p in problems}
    return [unique[k] for k in sorted(unique)]
