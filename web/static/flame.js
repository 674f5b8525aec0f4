/* Interactive flamegraphs for the flarebus console: zoom, search, hover.
 * Each <figure class="flame"> holds its Frame tree as JSON ({n: name, v: value, c: children});
 * this draws it as SVG. No dependencies. */
(function () {
  "use strict";
  var ROW = 18, NS = "http://www.w3.org/2000/svg";
  var saved = {}; // figure caption -> {path, search}: kept across live refreshes

  function color(name) {
    var h = 0;
    for (var i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (h % 50) + "," + (65 + (h >> 8) % 25) + "%," + (52 + (h >> 16) % 12) + "%)";
  }
  function fmt(v, unit) {
    if (unit === "nanoseconds") return (v / 1e6).toFixed(2) + " ms";
    return (Math.round(v * 1000) / 1000).toLocaleString() + " " + unit;
  }
  function depth(node) {
    var d = 0;
    (node.c || []).forEach(function (c) { d = Math.max(d, depth(c)); });
    return d + 1;
  }
  function el(name, attrs) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function setup(fig) {
    if (fig.dataset.ready) return;
    fig.dataset.ready = "1";
    var data = JSON.parse(fig.querySelector('script[type="application/json"]').textContent);
    var key = data.title, state = saved[key] || (saved[key] = {path: [], search: ""});
    var down = fig.dataset.orientation === "down";
    var bar = document.createElement("div");
    bar.className = "flame-bar";
    var id = "s" + Math.random().toString(36).slice(2);
    bar.innerHTML = '<label for="' + id + '">Search</label> <input id="' + id +
      '" type="search" placeholder="regex, e.g. db\\.query"> <button type="button">Reset zoom</button>' +
      ' <output aria-live="polite"></output>';
    var input = bar.querySelector("input"), out = bar.querySelector("output");
    input.value = state.search;
    var tip = document.createElement("div");
    tip.className = "flame-tip";
    tip.hidden = true;
    var holder = document.createElement("div");
    holder.className = "flame-svg";
    fig.insertBefore(bar, fig.querySelector("script"));
    fig.appendChild(holder);
    fig.appendChild(tip);

    function focusNode() { // follow the saved path of names from the root
      var node = data.tree, chain = [node];
      for (var i = 0; i < state.path.length; i++) {
        var next = (node.c || []).filter(function (c) { return c.n === state.path[i]; })[0];
        if (!next) { state.path = state.path.slice(0, i); break; }
        node = next; chain.push(node);
      }
      return chain;
    }

    function draw() {
      var chain = focusNode(), focus = chain[chain.length - 1], total = data.tree.v || 1;
      var rows = chain.length - 1 + depth(focus), width = holder.clientWidth || 800;
      var height = rows * ROW, re = null, matched = 0;
      if (state.search) { try { re = new RegExp(state.search, "i"); } catch (e) { re = null; } }
      var svg = el("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height,
        role: "img", "aria-label": "flamegraph of " + data.title});
      function rect(node, x, w, d, path, isAncestor) {
        if (w < 0.5) return;
        var y = down ? d * ROW : height - (d + 1) * ROW;
        var g = el("g", {"class": "frame" + (isAncestor ? " ancestor" : ""), "data-name": node.n});
        var hit = re && re.test(node.n);
        var r = el("rect", {x: x, y: y, width: Math.max(w - 1, 0.5), height: ROW - 1, rx: 2,
          fill: hit ? "#c026d3" : color(node.n)});
        var label = el("text", {x: x + 4, y: y + ROW - 5});
        var chars = Math.floor((w - 8) / 7);
        label.textContent = chars >= 3 ? (node.n.length > chars ? node.n.slice(0, chars - 2) + ".." : node.n) : "";
        var title = el("title", {});
        title.textContent = node.n + " — " + fmt(node.v, data.unit) + ", " + (100 * node.v / total).toFixed(2) + "% of all";
        g.appendChild(title); g.appendChild(r); g.appendChild(label);
        g.addEventListener("click", function () { state.path = path; draw(); });
        if (w >= 24) { // wide enough to read: reachable by keyboard, Enter zooms
          g.setAttribute("tabindex", "0");
          g.setAttribute("role", "button");
          g.setAttribute("aria-label", title.textContent);
          g.addEventListener("keydown", function (ev) {
            if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); state.path = path; draw(); }
          });
        }
        g.addEventListener("mousemove", function (ev) {
          tip.hidden = false;
          tip.textContent = node.n + " — " + fmt(node.v, data.unit) + " · " +
            (100 * node.v / total).toFixed(2) + "% of all · " + (100 * node.v / (focus.v || 1)).toFixed(2) + "% of zoom";
          var box = fig.getBoundingClientRect();
          tip.style.left = Math.min(ev.clientX - box.left + 12, box.width - 260) + "px";
          tip.style.top = (ev.clientY - box.top + 16) + "px";
        });
        g.addEventListener("mouseleave", function () { tip.hidden = true; });
        svg.appendChild(g);
        return hit;
      }
      chain.slice(0, -1).forEach(function (node, i) {
        rect(node, 0, width, i, state.path.slice(0, i), true);
      });
      (function walk(node, x, w, d, path) {
        if (rect(node, x, w, d, path, false)) { matched += node.v; return; }
        var scale = w / (node.v || 1), cx = x;
        (node.c || []).forEach(function (c) {
          var cw = c.v * scale;
          walk(c, cx, cw, d + 1, path.concat([c.n]));
          cx += cw;
        });
      })(focus, 0, width, chain.length - 1, state.path.slice());
      holder.replaceChildren(svg);
      out.textContent = state.search ? (re ? "matched " + (100 * matched / total).toFixed(2) + "% of all" : "not a valid regex") : "";
    }
    input.addEventListener("input", function () { state.search = input.value; draw(); });
    bar.querySelector("button").addEventListener("click", function () { state.path = []; draw(); });
    window.addEventListener("resize", draw);
    draw();
  }

  window.flarebusFlame = function (root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("figure.flame"), setup);
  };
  document.addEventListener("DOMContentLoaded", function () { window.flarebusFlame(document); });
})();
