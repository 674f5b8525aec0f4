"""The interactive flamegraph a person opens in a browser: one SVG, or one HTML page.

Layout as flamegraph.pl draws it (root at the bottom, width proportional to the
inclusive value, children in name order), with a little script embedded so the
file needs nothing else: click a frame to zoom, "Reset zoom", search by regex
(matches turn magenta and their share is shown), tooltips with value and share.
Frames narrower than ``min_width`` pixels are left out to keep files small.
"""

from __future__ import annotations

import re
import zlib
from html import escape

from flarebus.samplers.aggregate import Frame

WIDTH = 1200
ROW = 16
TOP = 36
BOTTOM = 24
PAD = 10
FONT = 12
CHAR = FONT * 0.59  # average glyph width of the 12px monospace-ish font below


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(name: str) -> str:
    """Escaped for XML/HTML; characters XML 1.0 forbids (control codes) become U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", name))


def _color(name: str) -> str:
    """A warm colour that is stable per frame name (same name, same colour in every graph)."""
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{(h >> 8) % 180 + 50},{(h >> 16) % 55})"


def _fit(name: str, width: float) -> str:
    chars = int((width - 6) / CHAR)
    if chars < 3:
        return ""
    return name if len(name) <= chars else name[: chars - 2] + ".."


def _unit_text(value: float, unit: str) -> str:
    if unit == "nanoseconds":
        return f"{value / 1e6:,.2f} ms"
    number = int(value) if float(value).is_integer() else round(value, 3)
    return f"{number:,} samples" if isinstance(number, int) else f"{number} samples"


def _frames_svg(root: Frame, unit: str, min_width: float) -> tuple[str, int]:
    total = root.value or 1.0
    scale = (WIDTH - 2 * PAD) / total
    rows: list[tuple[int, float, Frame]] = []
    todo: list[tuple[int, float, Frame]] = [(0, 0.0, root.sorted())]
    while todo:
        depth, offset, node = todo.pop()
        if node.value * scale < min_width:
            continue
        rows.append((depth, offset, node))
        x = offset
        for child in node.children.values():
            todo.append((depth + 1, x, child))
            x += child.value
    max_depth = max((d for d, _, _ in rows), default=0)
    height = TOP + (max_depth + 1) * ROW + BOTTOM
    parts = []
    for depth, offset, node in rows:
        x = PAD + offset * scale
        w = node.value * scale
        y = height - BOTTOM - (depth + 1) * ROW
        share = 100.0 * node.value / total
        name = _text(node.name)
        parts.append(
            f'<g class="f" data-x="{offset!r}" data-w="{node.value!r}" data-d="{depth}" '
            f'data-n="{name}"><title>{name} ({escape(_unit_text(node.value, unit))}, '
            f'{share:.2f}%)</title>'
            f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" '
            f'fill="{_color(node.name)}" rx="2"/>'
            f'<text x="{x + 3:.2f}" y="{y + ROW - 4}">{_text(_fit(node.name, w))}</text></g>')
    return "\n".join(parts), height


_SCRIPT = r"""
(function () {
  var svg = document.querySelector('svg.flarebus-fg');
  var W = +svg.getAttribute('data-width'), PAD = +svg.getAttribute('data-pad');
  var CHAR = +svg.getAttribute('data-char'), TOTAL = +svg.getAttribute('data-total');
  var frames = Array.prototype.slice.call(svg.querySelectorAll('g.f'));
  var info = svg.querySelector('#fg-info');
  function num(g, k) { return +g.getAttribute('data-' + k); }
  function fit(name, w) {
    var n = Math.floor((w - 6) / CHAR);
    if (n < 3) return '';
    return name.length <= n ? name : name.slice(0, n - 2) + '..';
  }
  function place(g, x, w) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    if (w < 0.1) { g.style.display = 'none'; return; }
    g.style.display = '';
    r.setAttribute('x', (PAD + x).toFixed(2)); r.setAttribute('width', w.toFixed(2));
    t.setAttribute('x', (PAD + x + 3).toFixed(2));
    t.textContent = fit(g.getAttribute('data-n'), w);
  }
  function zoom(target) {
    var x0 = num(target, 'x'), w0 = num(target, 'w'), d0 = num(target, 'd');
    var span = W - 2 * PAD, eps = w0 * 1e-9;
    frames.forEach(function (g) {
      var x = num(g, 'x'), w = num(g, 'w'), d = num(g, 'd');
      if (d < d0) {
        if (x <= x0 + eps && x + w >= x0 + w0 - eps) { place(g, 0, span); g.style.opacity = 0.6; }
        else { place(g, 0, 0); }
      } else if (x >= x0 - eps && x + w <= x0 + w0 + eps) {
        place(g, (x - x0) / w0 * span, w / w0 * span); g.style.opacity = 1;
      } else { place(g, 0, 0); }
    });
  }
  function search(pattern) {
    var re = null;
    try { re = pattern ? new RegExp(pattern) : null; }
    catch (e) { info.textContent = 'bad regex'; return; }
    var spans = [];
    frames.forEach(function (g) {
      var hit = re && re.test(g.getAttribute('data-n'));
      var r = g.querySelector('rect');
      if (!r.hasAttribute('data-fill')) r.setAttribute('data-fill', r.getAttribute('fill'));
      r.setAttribute('fill', hit ? 'rgb(230,0,230)' : r.getAttribute('data-fill'));
      if (hit) spans.push([num(g, 'x'), num(g, 'x') + num(g, 'w')]);
    });
    spans.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
    var covered = 0, end = -1;
    spans.forEach(function (s) {
      if (s[0] >= end) { covered += s[1] - s[0]; end = s[1]; }
      else if (s[1] > end) { covered += s[1] - end; end = s[1]; }
    });
    info.textContent = re ? 'matched ' + (100 * covered / TOTAL).toFixed(2) + '%' : '';
  }
  frames.forEach(function (g) { g.addEventListener('click', function () { zoom(g); }); });
  var reset = svg.querySelector('#fg-reset'), find = svg.querySelector('#fg-search');
  reset.addEventListener('click', function () { zoom(frames[0]); frames[0].style.opacity = 1; });
  find.addEventListener('click', function () { search(window.prompt('Search (regex):', '')); });
  window.flarebusSearch = search;
})();
"""

_STYLE = (
    "svg.flarebus-fg text { font-family: Menlo, Consolas, 'DejaVu Sans Mono', monospace;"
    f" font-size: {FONT}px; fill: #000; pointer-events: none; }}"
    " svg.flarebus-fg g.f { cursor: pointer; }"
    " svg.flarebus-fg g.f:hover rect { stroke: #000; stroke-width: 0.5; }"
    " svg.flarebus-fg .ui { cursor: pointer; fill: #333; pointer-events: all; }"
)


def _svg_element(root: Frame, title: str, unit: str, min_width: float) -> str:
    frames, height = _frames_svg(root, unit, min_width)
    total = root.value or 1.0
    return (
        f'<svg class="flarebus-fg" xmlns="http://www.w3.org/2000/svg" version="1.1" '
        f'width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f'data-width="{WIDTH}" data-pad="{PAD}" data-char="{CHAR}" data-total="{total!r}">\n'
        f'<style>{_STYLE}</style>\n'
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fdf8ef"/>\n'
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" style="font-size:16px">'
        f'{escape(title)}</text>\n'
        f'<text id="fg-reset" class="ui" x="{PAD}" y="20">Reset zoom</text>\n'
        f'<text id="fg-search" class="ui" x="{WIDTH - PAD}" y="20" text-anchor="end">'
        f'Search</text>\n'
        f'<text id="fg-info" x="{WIDTH - PAD}" y="{height - 6}" text-anchor="end"> </text>\n'
        f'<text x="{PAD}" y="{height - 6}">{escape(_unit_text(root.value, unit))} total</text>\n'
        f"{frames}\n"
    )


def render_svg(root: Frame, *, title: str = "flarebus flamegraph", unit: str = "samples",
               min_width: float = 0.1) -> str:
    """A standalone SVG document (the script inside runs when a browser opens the file)."""
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
            + _svg_element(root, title, unit, min_width)
            + f"<script type=\"text/ecmascript\"><![CDATA[{_SCRIPT}]]></script>\n</svg>\n")


def render_html(root: Frame, *, title: str = "flarebus flamegraph", unit: str = "samples",
                min_width: float = 0.1) -> str:
    """A standalone HTML page: the same SVG inline, a search box, no external resources."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n"
        "<style>body{margin:16px;font-family:sans-serif;background:#fff}"
        "#q{width:320px;padding:4px}</style>\n</head>\n<body>\n"
        "<p><label>Search (regex) <input id=\"q\" type=\"search\" "
        "oninput=\"window.flarebusSearch(this.value)\"></label> "
        "Click a frame to zoom in.</p>\n"
        + _svg_element(root, title, unit, min_width)
        + f"</svg>\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
