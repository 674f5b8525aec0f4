"""JSON Schema validation that reports like a compiler, not like a schema dump.

Used where a JSON Schema is the contract: a plugin's ``config_schema`` (rule
and config files are decoded by msgspec, see flarebus.typed). jsonschema's own messages ("is not
valid under any of the given schemas") tell a user nothing about their file.
Each error is turned into one line at the file position of the offending key
or value, with a hint where the schema has one (``x-hint``) and a "did you
mean" for misspelled keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema.exceptions import ValidationError, best_match

from flarebus.problems import describe_path, short, type_words, unknown_key
from flarebus.yamlfile import JsonPath

__all__ = ["explain"]


def _schema(error: ValidationError) -> Mapping[str, Any]:
    """The (sub)schema that failed; a boolean schema has no keywords."""
    return error.schema if isinstance(error.schema, Mapping) else {}


def _leaf(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf, the branch error that most likely describes the mistake."""
    while error.context and not _schema(error).get("x-hint"):
        deeper = best_match(error.context)
        if deeper is None:
            break
        error = deeper
    return error


def explain(error: ValidationError) -> tuple[JsonPath, str, bool]:
    """(path, message, points_at_key) for one jsonschema error."""
    error = _leaf(error)
    path: JsonPath = tuple(error.absolute_path)
    field = describe_path(path)
    prefix = f"{field}: " if field else ""
    hint = _schema(error).get("x-hint")
    kind = error.validator
    value: Any = error.validator_value  # its type depends on the keyword
    if kind == "additionalProperties":
        allowed = _schema(error).get("properties", {})
        extras = [k for k in error.instance if k not in allowed] if isinstance(
            error.instance, dict) else []
        key = extras[0] if extras else "?"
        return (*path, key), f"{describe_path((*path, key))}: {unknown_key(key, allowed)}", True
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return path, f"{prefix}missing required key {missing!r}", False
    if hint:
        return path, f"{prefix}{short(error.instance)} {hint}", False
    if kind == "type":
        names = value if isinstance(value, list) else [value]
        return path, f"{prefix}expected {type_words(names)}, got {short(error.instance)}", False
    if kind == "enum":
        options = ", ".join(str(v) for v in value)
        return path, f"{prefix}{short(error.instance)} is not one of: {options}", False
    if kind == "const":
        return path, f"{prefix}must be {short(error.validator_value)}", False
    if kind == "pattern":
        return path, f"{prefix}{short(error.instance)} does not match " \
                     f"{error.validator_value}", False
    if kind in {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"}:
        words = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=",
                 "exclusiveMaximum": "<"}[kind]
        return path, f"{prefix}must be {words} {error.validator_value}, " \
                     f"got {short(error.instance)}", False
    if kind in {"minItems", "minLength"}:
        return path, f"{prefix}must not be empty" if error.validator_value == 1 else \
            f"{prefix}needs at least {error.validator_value} items", False
    if kind in {"anyOf", "oneOf"}:
        description = _schema(error).get("description", "a different value")
        return path, f"{prefix}{short(error.instance)} is not valid here: " \
                     f"expected {description}", False
    return path, f"{prefix}{error.message}", False
