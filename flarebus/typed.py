"""Typed decoding of YAML data into msgspec Structs, with every problem at file:line:col.

msgspec is the only judge. A document (or one rule of it) is converted in one
call, and that is all a valid file costs. msgspec stops at the first problem,
though, and ``flarebus check`` must list them all: so when a conversion fails,
the collector converts the parts of the rejected value again (each field of a
Struct, each item of a list, each key and value of a mapping), down to the
parts msgspec rejects on their own, and words those like a compiler would. It
never judges a value itself, so what it reports and what the decoder accepts
cannot disagree; the structure comes from the Struct definitions, the words
from msgspec's error and the hints the types carry (``x-hint``, the same text
the generated JSON Schema shows).

Scalars that need parsing (durations, thresholds) are msgspec custom types with
two class attributes: ``from_yaml(value)`` returns the parsed value or raises
ValueError with the message a user reads, and ``json_schema`` is what the
generated JSON Schema says about them.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    NamedTuple,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import msgspec

from flarebus.errors import Problem
from flarebus.problems import describe_path, short, type_words, unknown_key

if TYPE_CHECKING:  # YAML is loaded only where a file is read
    from flarebus.yamlfile import JsonPath, YamlDocument

T = TypeVar("T")


class Issue(NamedTuple):
    """One problem of a value: where (a path into the data), what, and whether at its key."""

    path: JsonPath
    message: str
    at_key: bool = False


def dec_hook(tp: Any, value: Any) -> Any:
    """msgspec's hook for custom types: their ``from_yaml``. Any other type is a bug."""
    parse = getattr(tp, "from_yaml", None)
    if parse is None:  # not a ValueError: msgspec would report it as the user's mistake
        raise NotImplementedError(f"{tp!r} is not a type flarebus can decode")
    return parse(value)


def schema_hook(tp: Any) -> dict[str, Any]:
    """msgspec's JSON Schema hook for custom types: their ``json_schema``."""
    schema = getattr(tp, "json_schema", None)
    if schema is None:
        raise NotImplementedError(f"{tp!r} has no json_schema")
    return dict(schema)


def decode(value: Any, tp: type[T], *, path: JsonPath = (),
           strict: bool = True) -> tuple[T | None, list[Issue]]:
    """``value`` as a ``tp`` and no issues, or None and every issue (paths start at ``path``).

    ``strict=False`` also takes numbers and booleans written as strings (the
    environment has nothing else).
    """
    try:
        return msgspec.convert(value, tp, strict=strict, dec_hook=dec_hook), []
    except msgspec.ValidationError as exc:
        return None, _explain(value, tp, path, exc, strict)


def problems(doc: YamlDocument, issues: Iterable[Issue], *, base: JsonPath = (),
             rule: str | None = None) -> list[Problem]:
    """Issues as Problems of ``doc``; each message names its field relative to ``base``."""
    out = []
    for issue in issues:
        field = describe_path(issue.path[len(base):])
        message = f"{field}: {issue.message}" if field else issue.message
        out.append(doc.problem(issue.path, message, key=issue.at_key, rule=rule))
    return out


def _issues(value: Any, tp: Any, path: JsonPath, strict: bool) -> list[Issue]:
    return decode(value, tp, path=path, strict=strict)[1]


def _explain(value: Any, tp: Any, path: JsonPath, exc: msgspec.ValidationError,
             strict: bool) -> list[Issue]:
    """The issues of a value msgspec rejected: those of its parts, else its own."""
    inner, extra = _unwrap(tp)
    found = _parts(value, inner, path, strict)
    return found or [_leaf(value, inner, extra, path, exc)]


def _unwrap(tp: Any) -> tuple[Any, dict[str, Any]]:
    """``Annotated[T, Meta(...)]`` -> (T, the JSON Schema words of its Metas)."""
    extra: dict[str, Any] = {}
    if get_origin(tp) is Annotated:
        tp, *metas = get_args(tp)
        for meta in metas:
            if isinstance(meta, msgspec.Meta):
                extra.update(meta.extra_json_schema or {})
                if meta.description:
                    extra.setdefault("description", meta.description)
    return tp, extra


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _parts(value: Any, tp: Any, path: JsonPath, strict: bool) -> list[Issue]:
    """The issues of the fields, items or entries of ``value``; [] when each is fine alone."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct) and isinstance(value, dict):
        return _struct(value, tp, path, strict)
    origin = get_origin(tp)
    if origin is list and isinstance(value, list):
        (item,) = get_args(tp)
        return [i for n, v in enumerate(value) for i in _issues(v, item, (*path, n), strict)]
    if origin is dict and isinstance(value, dict):
        key_type, value_type = get_args(tp)
        out = []
        for key, item in value.items():
            out += [i._replace(at_key=True) for i in _issues(key, key_type, (*path, key), strict)]
            out += _issues(item, value_type, (*path, key), strict)
        return out
    if _is_union(tp) and isinstance(value, dict | list):
        kind = dict if isinstance(value, dict) else list
        branches = [m for m in get_args(tp) if _container(_unwrap(m)[0]) is kind]
        if len(branches) == 1:
            return _issues(value, branches[0], path, strict)
    return []


def _container(tp: Any) -> type | None:
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return dict
    origin = get_origin(tp)
    return origin if origin in (dict, list) else None


def _struct(value: dict[str, Any], cls: type[msgspec.Struct], path: JsonPath,
            strict: bool) -> list[Issue]:
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    out = []
    if cls.__struct_config__.forbid_unknown_fields:
        out += [Issue((*path, key), unknown_key(key, fields), True)
                for key in value if key not in fields]
    out += [Issue(path, f"missing required key {name!r}")
            for name, f in fields.items() if f.required and name not in value]
    for key, item in value.items():
        if key in fields:
            out += _issues(item, fields[key].type, (*path, key), strict)
    return out


_AT = re.compile(r"^(?P<msg>.*?) - at `\$(?P<path>[^`]*)`$", re.S)
_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_TYPE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `\w+`$")
_BOUND = re.compile(r"^Expected `(?:int|float)` (?P<op>>=|>|<=|<) (?P<n>\S+)$")
_LENGTH = re.compile(r"^Expected `(?P<kind>str|array|object)` of length (?P<op>>=|<=) (?P<n>\d+)$")
_PATTERN = re.compile(r"^Expected `str` matching regex (?P<pattern>.*)$")


def split_error(text: str) -> tuple[JsonPath, str]:
    """msgspec's "Expected `int`, got `str` - at `$.retries[0]`" -> (("retries", 0), message)."""
    match = _AT.match(text)
    if not match:
        return (), text
    path: list[str | int] = []
    for name, index in _PART.findall(match["path"]):
        path.append(int(index) if index else name)
    return tuple(path), match["msg"]


def _leaf(value: Any, tp: Any, extra: dict[str, Any], path: JsonPath,
          exc: msgspec.ValidationError) -> Issue:
    """The one issue of a value whose parts (if any) are fine: msgspec's error, reworded."""
    rel, text = split_error(str(exc))
    if isinstance(exc.__cause__, ValueError | TypeError):  # a from_yaml or __post_init__ words
        return Issue((*path, *rel), str(exc.__cause__))
    if rel:  # deeper than this value's type can say; msgspec's words at the right place
        return Issue((*path, *rel), text)
    if hint := extra.get("x-hint"):
        return Issue(path, f"{short(value)} {hint}")
    if match := _TYPE.match(text):
        if _is_union(tp) and "description" in extra:
            return Issue(path, f"{short(value)} is not valid here: "
                               f"expected {extra['description']}")
        return Issue(path, f"expected {type_words(match['want'].split(' | '))}, "
                           f"got {short(value)}")
    if text.startswith("Invalid enum value"):
        return Issue(path, f"{short(value)} is not one of: {', '.join(_choices(tp))}")
    if match := _BOUND.match(text):
        return Issue(path, f"must be {match['op']} {match['n']}, got {short(value)}")
    if match := _LENGTH.match(text):
        return Issue(path, _length(match["kind"], match["op"], int(match["n"]), value))
    if match := _PATTERN.match(text):
        return Issue(path, f"{short(value)} does not match {match['pattern'][1:-1]}")
    return Issue(path, text)


def _choices(tp: Any) -> list[str]:
    """The values of the Literal in ``tp``, in the order they are declared."""
    if get_origin(tp) is Literal:
        return [str(v) for v in get_args(tp)]
    if _is_union(tp):
        return [c for member in get_args(tp) for c in _choices(_unwrap(member)[0])]
    return []


def _length(kind: str, op: str, n: int, value: Any) -> str:
    unit = "characters" if kind == "str" else "items"
    if op == ">=":
        return "must not be empty" if n == 1 else f"needs at least {n} {unit}"
    return f"{short(value)} is longer than {n} {unit}" if kind == "str" \
        else f"has more than {n} {unit}"
