"""Validating a plugin's config before the plugin sees it, with errors like a compiler's.

Every kind declares its config the same way, as ``config_schema``: a msgspec
Struct type or a JSON Schema. Both are checked here, for the worker's actions
and sinks and for the sampler runtime alike, and every mistake becomes a
:class:`~flarebus.errors.Problem` naming the plugin and the key, pointing at
the config file line (the ``plugins:`` or ``samplers:`` section) or naming the
rule (for per-rule action config) or the command line: the style ``flarebus
check`` uses for rule files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema
import msgspec

from flarebus.errors import PluginConfigError, Problem
from flarebus.problems import describe_path, sort_problems
from flarebus.typed import split_error
from flarebus.validation import explain
from flarebus.yamlfile import JsonPath, YamlDocument


@dataclass(frozen=True)
class ConfigOrigin:
    """Where a config came from: a YAML document and the path of the config in it, or a label."""

    label: str
    doc: YamlDocument | None = None
    base: JsonPath = ()
    rule: str | None = None

    def problem(self, path: JsonPath, message: str, *, key: bool = False) -> Problem:
        if self.doc is not None:
            return self.doc.problem((*self.base, *path), message, key=key, rule=self.rule)
        return Problem(self.label, 1, 1, message, self.rule)


@lru_cache(maxsize=64)
def _json_validator(schema_json: bytes) -> jsonschema.protocols.Validator:
    schema = msgspec.json.decode(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def convert_config(plugin: str, schema: Any, config: Mapping[str, Any],
                   origin: ConfigOrigin) -> Any:
    """The config converted to what the plugin declared; PluginConfigError lists every problem.

    No schema: the dict is passed as it is. A Struct type: an instance of it.
    A JSON Schema: the dict, once it validates.
    """
    who = f"plugin {plugin!r}: "
    if schema is None:
        return dict(config)
    if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
        try:
            return msgspec.convert(dict(config), schema, strict=False)
        except msgspec.ValidationError as exc:
            path, message = split_error(str(exc))
            if message.startswith("Object missing required field"):
                missing = message.split("`")[1] if "`" in message else "?"
                message = f"missing required key {missing!r}"
            elif message.startswith("Object contains unknown field"):
                unknown = message.split("`")[1] if "`" in message else "?"
                allowed = ", ".join(f.name for f in msgspec.structs.fields(schema))
                path = (*path, unknown)
                message = f"unknown key; allowed: {allowed}"
            field = describe_path(path)
            text = f"{who}{field}: {message}" if field else f"{who}{message}"
            raise PluginConfigError([origin.problem(path, text)], plugin=plugin) from None
    if isinstance(schema, Mapping):
        validator = _json_validator(msgspec.json.encode(schema))
        problems = []
        for error in validator.iter_errors(dict(config)):
            path, message, at_key = explain(error)
            problems.append(origin.problem(path, f"{who}{message}", key=at_key))
        if problems:
            raise PluginConfigError(sort_problems(problems), plugin=plugin)
        return dict(config)
    raise PluginConfigError([origin.problem((), f"{who}config_schema must be a msgspec Struct "
                                                f"type or a JSON Schema dict, got {schema!r}")],
                            plugin=plugin)


def validated_config(plugin: object, config: Mapping[str, Any], origin: ConfigOrigin,
                     name: str | None = None) -> Any:
    """``config`` checked against the plugin's ``config_schema`` (none: the dict as it is)."""
    who = name if name is not None else str(getattr(plugin, "name", "?"))
    return convert_config(who, getattr(plugin, "config_schema", None), config, origin)


def validation_failure(plugin: str, exc: Exception, origin: ConfigOrigin) -> PluginConfigError:
    """A plugin's own ``validate_config()`` (or ``init``) refused its config."""
    reason = str(exc) or type(exc).__name__
    return PluginConfigError([origin.problem((), f"plugin {plugin!r}: {reason}")], plugin=plugin)


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A rule's action config over the ``plugins:`` section's config (shallow: top keys)."""
    return {**base, **override}
