"""YAML files that remember where each value came from.

Rule, config and test files all report errors as ``file:line:column``; PyYAML's
node marks carry those positions, so the loader keeps them beside the data,
keyed by the path of keys and indexes that leads to each value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flarebus.errors import InvalidFileError, Problem

JsonPath = tuple[str | int, ...]

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


def _build(node: yaml.Node, path: JsonPath, doc: YamlDocument, loader: Any) -> Any:
    doc.value_at[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise InvalidFileError([doc.problem(path, "mapping keys must be scalars")])
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            doc.key_at[child] = _mark(key_node)
            out[key] = _build(value_node, child, doc, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; syntax errors become an InvalidFileError with position."""
    doc = YamlDocument(file=file, data=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        doc.data = None if node is None else _build(node, (), doc, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = exc.problem or exc.context or "invalid YAML"
        raise InvalidFileError([Problem(file, line, column, f"YAML syntax: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise InvalidFileError([Problem(file, 1, 1, f"YAML syntax: {exc}")]) from None
    finally:
        loader.dispose()
    return doc


def load_yaml(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; an unreadable file is a Problem, not a traceback."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidFileError([Problem(name, 1, 1, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise InvalidFileError([Problem(name, 1, 1, f"not UTF-8 text: {exc.reason}")]) from None
    return parse_yaml(text, name)
