"""The built-in visualizations: the flamegraph, the icicle (the same, upside down), top frames.

Each renders an HTML fragment from a Panel. The flamegraph and the icicle
carry the Frame tree as JSON in a ``<script type="application/json">`` block
that ``static/flame.js`` draws as an interactive SVG (zoom, search, hover),
with a table of the hottest frames as the no-script fallback; the tree is
cut at frames under 0.1 % of the total so a deep profile stays small.
"""

from __future__ import annotations

import json
from html import escape

from flarebus.frame import Frame
from flarebus.plugin import Panel, Visualization

MIN_SHARE = 0.001
TOP_ROWS = 25


def tree_json(frame: Frame, min_share: float = MIN_SHARE) -> dict[str, object]:
    """The tree as ``{n, v, c}`` (name, inclusive value, children), small frames cut."""
    cut = frame.value * min_share

    def node(f: Frame) -> dict[str, object]:
        kids = [node(c) for c in sorted(f.children.values(), key=lambda c: c.name)
                if c.value >= cut and c.value > 0]
        return {"n": f.name, "v": f.value, "c": kids} if kids else {"n": f.name, "v": f.value}

    return node(frame)


def script_json(data: object) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no HTML parsing surprises)."""
    return (json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
            .replace(">", "\\u003e").replace("&", "\\u0026"))


def top_frames(frame: Frame, rows: int = TOP_ROWS) -> list[tuple[str, float, float]]:
    """(name, self, inclusive) of the frames with the most self weight, names merged."""
    own: dict[str, float] = {}
    total: dict[str, float] = {}
    for depth, node in frame.walk():
        if depth == 0:
            continue
        own[node.name] = own.get(node.name, 0.0) + node.self_value
        total[node.name] = total.get(node.name, 0.0) + node.value  # recursion counts twice
    ranked = sorted(own, key=lambda n: (-own[n], n))[:rows]
    return [(n, own[n], total[n]) for n in ranked]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def top_table(panel: Panel) -> str:
    frame = panel.frame or Frame()
    whole = frame.value or 1.0
    body = "".join(
        f"<tr><th scope=row><code>{escape(name)}</code></th><td>{_number(own)}</td>"
        f"<td>{own / whole:.1%}</td><td>{_number(incl)}</td><td>{incl / whole:.1%}</td></tr>"
        for name, own, incl in top_frames(frame))
    return (f"<table class=top><caption>{escape(panel.title)}: hottest frames "
            f"({_number(frame.value)} {escape(panel.unit)})</caption><thead><tr><th scope=col>"
            "frame</th><th scope=col>self</th><th scope=col>self %</th><th scope=col>total</th>"
            f"<th scope=col>total %</th></tr></thead><tbody>{body}</tbody></table>")


class FlameView(Visualization):
    """The interactive flamegraph (root at the bottom)."""

    name = "flame"
    accepts = "frames"
    orientation = "up"

    def render(self, panel: Panel) -> str:
        frame = panel.frame or Frame()
        data = {"tree": tree_json(frame), "unit": panel.unit, "title": panel.title}
        return (f'<figure class="flame" data-orientation="{self.orientation}">'
                f"<figcaption>{escape(panel.title)}</figcaption>"
                f'<script type="application/json">{script_json(data)}</script>'
                f"<noscript>{top_table(panel)}</noscript></figure>")


class IcicleView(FlameView):
    """The same graph hanging from the root at the top."""

    name = "icicle"
    orientation = "down"


class TopTable(Visualization):
    """A table of the frames with the most self weight."""

    name = "top"
    accepts = "frames"

    def render(self, panel: Panel) -> str:
        return top_table(panel)
