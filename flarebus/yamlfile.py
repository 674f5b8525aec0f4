"""YAML files that remember where each value came from.

Rule, config and test files all report errors as ``file:line:column``; PyYAML's
node marks carry those positions, so the loader keeps them beside the data,
keyed by the path of keys and indexes that leads to each value.

Every file read here may come from someone else (a rules directory the engine
reloads on any change), so the loader bounds what one file can cost before
anything else looks at it, each limit a ``file:line:column`` problem:

- ``MAX_FILE_BYTES``: the file is refused unread past it (rule, config and test
  files are hand-written: a few kB);
- ``MAX_DEPTH`` levels of nested mappings and sequences (the formats need
  fewer than ten); libyaml itself stops at 1000;
- ``MAX_SCALAR`` characters in one key or value;
- no aliases (``*name``) or merge keys (``<<: *name``). An alias is a pointer:
  nine of them nested seven deep (the "billion laughs" file, 20 lines) expand
  into 4.8 million values. Refusing them costs one set lookup per node and leaves
  no expansion budget to tune, and none of the formats needs them (no file shipped or documented
  with flarebus uses one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flarebus.errors import InvalidFileError, Problem

JsonPath = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 32
MAX_SCALAR = 64 * 1024
_MERGE_TAG = "tag:yaml.org,2002:merge"

try:  # the C loader is several times faster where PyYAML was built with it
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader


@dataclass
class YamlDocument:
    """A parsed YAML file: its data and the position of every key and value."""

    file: str
    data: Any
    value_at: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    key_at: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    #: The scalars written quoted (' or "): their text starts one column after the position.
    quoted: set[JsonPath] = field(default_factory=set)

    def position(self, path: JsonPath, *, key: bool = False) -> tuple[int, int]:
        """(line, column), 1-based, of the value at ``path`` (or of its key).

        Falls back to the nearest enclosing value that has a position, so an
        error always points somewhere real.
        """
        table = self.key_at if key else self.value_at
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.value_at:
                return self.value_at[probe]
            probe = probe[:-1]
        return self.value_at.get((), (1, 1))

    def problem(self, path: JsonPath, message: str, *, key: bool = False,
                rule: str | None = None) -> Problem:
        """A Problem located at ``path`` in this file."""
        line, column = self.position(path, key=key)
        return Problem(self.file, line, column, message, rule)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Python values from a composed node tree, with positions, within the limits above."""

    def __init__(self, doc: YamlDocument, loader: Any) -> None:
        self.doc = doc
        self.loader = loader
        self.seen: set[int] = set()  # every node built: the composer shares aliased nodes

    def refuse(self, path: JsonPath, message: str, *, key: bool = False) -> InvalidFileError:
        return InvalidFileError([self.doc.problem(path, message, key=key)])

    def build(self, node: yaml.Node, path: JsonPath) -> Any:
        if id(node) in self.seen:  # checked before its position is recorded: points at the key
            line, column = _mark(node)
            raise self.refuse(path, f"YAML aliases are not supported (this one repeats the "
                                    f"value at line {line}, column {column}): write the value "
                                    "out", key=True)
        self.seen.add(id(node))
        self.doc.value_at[path] = _mark(node)
        if len(path) > MAX_DEPTH:
            raise self.refuse(path, f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def mapping(self, node: yaml.MappingNode, path: JsonPath) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.doc.value_at[(*path, "<<")] = _mark(key_node)
                raise self.refuse((*path, "<<"), "YAML merge keys (<<: *name) are not "
                                                 "supported: write the keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.refuse(path, "mapping keys must be scalars")
            key = self.scalar(key_node, path)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise self.refuse(path, "mapping keys must be scalars")
            if isinstance(key, bool):  # YAML 1.1 reads `on:`, `yes:` as booleans; a key is a
                key = key_node.value   # name, so it stays as written (`on: [firing]`)
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            self.doc.key_at[child] = _mark(key_node)
            out[key] = self.build(value_node, child)
        return out

    def scalar(self, node: yaml.Node, path: JsonPath) -> Any:
        if len(node.value) > MAX_SCALAR:
            self.doc.value_at.setdefault(path, _mark(node))
            raise self.refuse(path, f"a value of {len(node.value):,} characters: more than "
                                    f"the {MAX_SCALAR:,} allowed")
        if getattr(node, "style", None) in ("'", '"'):
            self.doc.quoted.add(path)
        return self.loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; syntax errors become an InvalidFileError with position."""
    doc = YamlDocument(file=file, data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc.data = None if node is None else _Builder(doc, loader).build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        if "maximum nesting depth" in reason:  # libyaml's own limit, deeper than ours
            reason = f"nested deeper than {MAX_DEPTH} levels"
            raise InvalidFileError([Problem(file, line, column, reason)]) from None
        raise InvalidFileError([Problem(file, line, column, f"YAML syntax: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise InvalidFileError([Problem(file, 1, 1, f"YAML syntax: {exc}")]) from None
    except RecursionError:  # the pure-Python composer (no libyaml) recurses per level
        raise InvalidFileError([Problem(file, 1, 1, f"nested deeper than {MAX_DEPTH} "
                                                    "levels")]) from None
    finally:
        loader.dispose()
    return doc


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; an unreadable file is a Problem, not a traceback."""
    name = str(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise InvalidFileError([Problem(
                name, 1, 1, f"more than {MAX_FILE_BYTES // (1024 * 1024)} MiB: rule, config "
                            "and test files are refused past that size")])
        text = data.decode("utf-8")
    except OSError as exc:
        raise InvalidFileError([Problem(name, 1, 1, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise InvalidFileError([Problem(name, 1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    return parse_yaml(text, name)
