"""Exporter plugins: a Frame tree out as folded text, speedscope JSON, SVG or HTML.

The exporter kind of the plugin API is ``export(root) -> bytes``: an exporter
only renders; where the bytes go (a file, a subject) is the caller's business,
so the same exporters serve ``flarebus flamegraph``, the ``flamegraph`` action
and users' own code. ``exporter_for_path`` picks one by file suffix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from flarebus.samplers.aggregate import ROOT_NAME, Frame
from flarebus.samplers.flamegraph_svg import render_html, render_svg


@runtime_checkable
class Exporter(Protocol):
    """The exporter plugin seam."""

    name: str
    suffix: str
    media_type: str

    def export(self, root: Frame) -> bytes: ...


def _number(value: float) -> str:
    """Integral weights as integers (what flamegraph.pl expects), others as short floats."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _clean(name: str) -> str:
    """Folded lines are ``a;b;c N``: a frame name cannot hold ``;`` or a newline."""
    return name.replace(";", ":").replace("\n", " ").replace("\r", " ")


class FoldedExporter:
    """Collapsed stacks: a ``root;child;leaf weight`` line per stack (flamegraph.pl reads it)."""

    name = "folded"
    suffix = ".folded"
    media_type = "text/plain; charset=utf-8"

    def export(self, root: Frame) -> bytes:
        lines = [f"{';'.join(_clean(f) for f in path)} {_number(weight)}"
                 for path, weight in root.paths() if weight > 0]
        return ("\n".join(lines) + "\n").encode() if lines else b""


def parse_folded(text: str, root: str = ROOT_NAME) -> Frame:
    """The tree folded text describes (FoldedExporter's inverse); a bad line raises ValueError."""
    tree = Frame(root)
    for number, raw in enumerate(text.split("\n"), 1):  # not splitlines(): \f may be in a name
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        stack, _, weight = line.rpartition(" ")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"line {number}: {line!r} does not end with a weight") from None
        if not stack:
            raise ValueError(f"line {number}: {line!r} has no frames")
        tree.add(stack.split(";"), value)
    return tree


class SpeedscopeExporter:
    """speedscope's file format: one "sampled" profile (https://www.speedscope.app)."""

    name = "speedscope"
    suffix = ".speedscope.json"
    media_type = "application/json"
    def __init__(self, title: str = "flarebus", unit: str = "samples") -> None:
        self.title = title
        self.unit = "nanoseconds" if unit == "nanoseconds" else "none"

    def export(self, root: Frame) -> bytes:
        index: dict[str, int] = {}
        samples: list[list[int]] = []
        weights: list[float] = []
        for path, weight in root.paths():
            if weight <= 0:
                continue
            samples.append([index.setdefault(name, len(index)) for name in path])
            weights.append(weight)
        doc = {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": [{"name": name} for name in index]},
            "profiles": [{"type": "sampled", "name": self.title, "unit": self.unit,
                          "startValue": 0, "endValue": sum(weights),
                          "samples": samples, "weights": weights}],
            "name": self.title, "activeProfileIndex": 0, "exporter": "flarebus",
        }
        return json.dumps(doc, separators=(",", ":")).encode()


class SvgExporter:
    """A self-contained interactive SVG flamegraph (click to zoom, search, tooltips)."""

    name = "svg"
    suffix = ".svg"
    media_type = "image/svg+xml"

    def __init__(self, title: str = "flarebus flamegraph", unit: str = "samples") -> None:
        self.title = title
        self.unit = unit

    def export(self, root: Frame) -> bytes:
        return render_svg(root, title=self.title, unit=self.unit).encode()


class HtmlExporter(SvgExporter):
    """The SVG flamegraph in a self-contained HTML page with a search box."""

    name = "html"
    suffix = ".html"
    media_type = "text/html; charset=utf-8"

    def export(self, root: Frame) -> bytes:
        return render_html(root, title=self.title, unit=self.unit).encode()


#: the built-in exporters by name
EXPORTERS: dict[str, type[FoldedExporter | SpeedscopeExporter | SvgExporter]] = {
    "folded": FoldedExporter, "speedscope": SpeedscopeExporter,
    "svg": SvgExporter, "html": HtmlExporter,
}
_SUFFIXES = {".folded": "folded", ".collapsed": "folded", ".txt": "folded",
             ".json": "speedscope", ".svg": "svg", ".html": "html", ".htm": "html"}


def exporter(name: str, *, title: str = "flarebus flamegraph", unit: str = "samples") -> Exporter:
    """A built-in exporter by name; ValueError naming the choices otherwise."""
    cls = EXPORTERS.get(name)
    if cls is None:
        raise ValueError(f"unknown flamegraph format {name!r} (use {', '.join(EXPORTERS)})")
    if cls is FoldedExporter:
        return FoldedExporter()
    return cls(title=title, unit=unit)  # type: ignore[call-arg]


def format_for_path(path: str | Path) -> str:
    """The format a file name asks for: .svg, .html, .folded/.collapsed/.txt, .json (speedscope)."""
    suffix = Path(path).suffix.lower()
    name = _SUFFIXES.get(suffix)
    if name is None:
        raise ValueError(f"{str(path)!r}: cannot tell the format from {suffix or 'no suffix'!r} "
                         f"(use .svg, .html, .folded, .json, or give --format)")
    return name
