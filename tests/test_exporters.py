"""Exporters: folded round-trips, speedscope is complete, SVG/HTML parse and show the hot frame."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flarebus.events import Stack
from flarebus.samplers.aggregate import Frame, build
from flarebus.samplers.exporters import (
    Exporter,
    FoldedExporter,
    HtmlExporter,
    SpeedscopeExporter,
    SvgExporter,
    exporter,
    format_for_path,
    parse_folded,
)

SVG_NS = "{http://www.w3.org/2000/svg}"
frame_names = st.text(st.characters(blacklist_characters=";\n\r", blacklist_categories=("Cs",)),
                      min_size=1, max_size=12).filter(lambda s: s.strip() == s)
stacks = st.lists(st.builds(Stack, st.lists(frame_names, min_size=1, max_size=5),
                            st.integers(1, 1000).map(float)), min_size=1, max_size=20)


def hot_tree() -> Frame:
    return build([Stack(["main", "serve", "app.hot_function"], 90),
                  Stack(["main", "serve", "db.query"], 8),
                  Stack(["main", "<weird & \"name\">"], 2)])


@settings(max_examples=150, deadline=None)
@given(stacks)
def test_folded_round_trips(stack_list: list[Stack]) -> None:
    """parse_folded(FoldedExporter().export(tree)) is the same tree."""
    tree = build(stack_list)
    assert parse_folded(FoldedExporter().export(tree).decode()) == tree


def test_folded_lines_are_flamegraph_pl_format() -> None:
    """One `a;b;c weight` line per stack, integral weights as integers."""
    text = FoldedExporter().export(hot_tree()).decode()
    assert "main;serve;app.hot_function 90\n" in text
    assert "main;serve;db.query 8\n" in text


def test_parse_folded_rejects_bad_lines() -> None:
    """A line without a weight is an error naming the line."""
    with pytest.raises(ValueError, match="line 2"):
        parse_folded("a;b 1\na;b\n")


def test_speedscope_holds_every_sample() -> None:
    """The speedscope profile's samples and weights rebuild the tree."""
    tree = hot_tree()
    doc = json.loads(SpeedscopeExporter(title="t").export(tree))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = [f["name"] for f in doc["shared"]["frames"]]
    profile = doc["profiles"][0]
    assert profile["type"] == "sampled"
    rebuilt = Frame()
    for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
        rebuilt.add([frames[i] for i in sample], weight)
    assert rebuilt == tree
    assert profile["endValue"] == tree.value


def test_svg_parses_and_shows_the_hot_frame() -> None:
    """The SVG is well-formed XML; the hot frame is drawn with its share of the width."""
    svg = SvgExporter(title="hot <test>").export(hot_tree())
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    groups = {g.get("data-n"): g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "f"}
    hot = groups["app.hot_function"]
    assert float(hot.get("data-w")) == 90.0  # type: ignore[arg-type]
    title = hot.find(f"{SVG_NS}title").text  # type: ignore[union-attr]
    assert "90.00%" in title  # type: ignore[operator]
    whole = float(groups["all"].find(f"{SVG_NS}rect").get("width"))  # type: ignore[union-attr,arg-type]
    width = float(hot.find(f"{SVG_NS}rect").get("width"))  # type: ignore[union-attr,arg-type]
    assert width == pytest.approx(0.9 * whole, abs=0.02)
    assert '<weird & "name">' in groups
    assert root.find(f"{SVG_NS}script") is not None


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.names.update(v for k, v in attrs if k == "data-n" and v)


def test_html_parses_and_shows_the_hot_frame() -> None:
    """The HTML page parses, embeds the SVG and a search box, and holds the hot frame."""
    page = HtmlExporter().export(hot_tree()).decode()
    parser = _Collect()
    parser.feed(page)
    parser.close()
    assert {"html", "svg", "script", "input"} <= set(parser.tags)
    assert "app.hot_function" in parser.names
    assert "http" not in page.replace("http://www.w3.org", "")  # self-contained


def test_exporters_satisfy_the_plugin_protocol() -> None:
    """Every built-in exporter is an Exporter, and is found by name and by file suffix."""
    for name in ("folded", "speedscope", "svg", "html"):
        assert isinstance(exporter(name), Exporter)
    assert format_for_path("x.svg") == "svg"
    assert format_for_path("x.collapsed") == "folded"
    assert format_for_path("x.json") == "speedscope"
    with pytest.raises(ValueError, match="cannot tell the format"):
        format_for_path("x.png")
    with pytest.raises(ValueError, match="unknown flamegraph format"):
        exporter("png")


def test_empty_tree_exports_cleanly() -> None:
    """No samples: empty folded text, and an SVG that still parses."""
    assert FoldedExporter().export(Frame()) == b""
    ET.fromstring(SvgExporter().export(Frame()))


@settings(max_examples=60, deadline=None)
@given(stacks)
def test_svg_parses_whatever_the_frame_names(stack_list: list[Stack]) -> None:
    """Any frame names (markup, control characters) still give well-formed XML."""
    ET.fromstring(SvgExporter().export(build(stack_list)))
