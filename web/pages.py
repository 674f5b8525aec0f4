"""The console's pages: one handler each, reading the feeds, rendering a template.

Every list is filtered and paged here, on the server: the Series page over
ten thousand series sends one page of rows, never the set.
"""

from __future__ import annotations

import re
import time

from aiohttp import web

from flarebus import bus
from flarebus.durations import parse_duration
from flarebus.errors import SilenceError, UsageError
from flarebus.plugin import Panel, maybe_await
from flarebus.summary import STALE_AFTER, EngineSummary, RuleInfo
from flarebus.web import history
from flarebus.web.app import console_of, problem, render
from flarebus.web.feeds import Attached
from flarebus.web.series import (
    MAX_PER_PAGE,
    PER_PAGE,
    counts_by_rule,
    live_rows,
    parse_matchers,
    select,
)

TRIGGERS_PER_PAGE = 50


def _int(request: web.Request, name: str, default: int) -> int:
    try:
        return max(1, int(request.query.get(name, default)))
    except ValueError:
        return default


def _summaries(request: web.Request) -> list[EngineSummary]:
    return sorted(console_of(request).state.summaries.values(), key=lambda s: s.shard)


async def _workers(request: web.Request) -> dict[str, object] | None:
    """The shared worker consumer's figures: waiting pulls show live workers."""
    console = console_of(request)
    try:
        info = await console.state.js.consumer_info(bus.TRIGGERS_STREAM, console.worker_consumer)
    except Exception:  # no worker ever started: no consumer
        return None
    return {"waiting": info.num_waiting or 0, "pending": info.num_pending or 0,
            "unacked": info.num_ack_pending or 0, "name": console.worker_consumer}


async def overview(request: web.Request) -> web.Response:
    state = console_of(request).state
    summaries = _summaries(request)
    rows = live_rows(summaries, state.triggers())
    counts = counts_by_rule(rows)
    rules: dict[str, tuple[RuleInfo, list[str]]] = {}
    inactive: dict[str, int] = {}  # from the summaries: series neither pending nor firing
    for s in summaries:
        for rule in s.rules:
            rules.setdefault(rule.name, (rule, []))[1].append(s.shard)
            inactive[rule.name] = inactive.get(rule.name, 0) + max(
                0, rule.tracked - rule.pending - rule.firing)
    now = time.time()
    return render(request, "overview.html", topics=("summaries", "triggers"),
                  engines=summaries, live=[s for s in summaries if now - s.updated_at
                                           <= STALE_AFTER],
                  rules=sorted(rules.values(), key=lambda r: r[0].name), counts=counts,
                  inactive=inactive,
                  workers=await _workers(request), dead=len(state.dead),
                  recent=list(reversed(state.entries))[:8])


async def series(request: web.Request) -> web.Response:
    state = console_of(request).state
    summaries = _summaries(request)
    rule, matchers_text = request.query.get("rule", ""), request.query.get("labels", "")
    wanted = request.query.get("state", "")
    error = None
    try:
        matchers = parse_matchers(matchers_text)
    except UsageError as exc:
        matchers, error = [], str(exc)
    rows = live_rows(summaries, state.triggers())
    page = select(rows, rule=rule, state=wanted, matchers=matchers,
                  page=_int(request, "page", 1), per_page=_int(request, "per_page", PER_PAGE))
    rules = sorted({r.name for s in summaries for r in s.rules})
    view, panel = request.query.get("view", ""), ""
    plugin = console_of(request).visualizations.get(view)
    if rule and plugin is not None and plugin.accepts == "series":
        chosen = select(rows, rule=rule, state=wanted, matchers=matchers, per_page=MAX_PER_PAGE)
        panel = str(await maybe_await(plugin.render(Panel(
            f"{rule}: {chosen.total} series", rule=rule, series=[r.info for r in chosen.rows]))))
    return render(request, "series.html", topics=("summaries", "triggers"), page=page,
                  view=view, views=console_of(request).views("series"), panel=panel,
                  rules=rules, rule=rule, matchers_text=matchers_text, wanted_state=wanted,
                  error=error,
                  truncated=[s.shard for s in summaries if s.truncated],
                  status=400 if error else 200)


async def triggers(request: web.Request) -> web.Response:
    console = console_of(request)
    state = console.state
    rule, wanted = request.query.get("rule", ""), request.query.get("state", "")
    chosen = [e for e in reversed(state.entries)
              if (not rule or e.trigger.rule == rule)
              and (not wanted or (wanted == "dead" and e.dead)
                   or (not e.dead and e.trigger.state == wanted))]
    pages = max(1, -(-len(chosen) // TRIGGERS_PER_PAGE))
    page = min(_int(request, "page", 1), pages)
    shown = chosen[(page - 1) * TRIGGERS_PER_PAGE: page * TRIGGERS_PER_PAGE]
    rows = await history.rows(state, shown, console.default_action)
    return render(request, "triggers.html", topics=("triggers",), rows=rows, rule=rule,
                  wanted_state=wanted, page=page, pages=pages, total=len(chosen),
                  rules=sorted({e.trigger.rule for e in state.entries}))


async def requeue_dead(request: web.Request) -> web.Response:
    seq = int(request.match_info["seq"])
    try:
        trigger = await history.requeue(console_of(request).state, seq)
    except history.RequeueError as exc:
        return problem(404, str(exc))
    return web.json_response({"requeued": seq, "trigger": trigger.id, "rule": trigger.rule})


async def _panel(request: web.Request, name: str, panel: Panel) -> str:
    console = console_of(request)
    plugin = console.visualizations.get(name)
    if plugin is None or plugin.accepts != "frames":
        plugin = console.visualizations.get("flame")
    if plugin is None:
        return ""
    return str(await maybe_await(plugin.render(panel)))


async def flamegraphs(request: web.Request) -> web.Response:
    console = console_of(request)
    state = console.state
    view = request.query.get("view", "flame")
    panels = []
    for source in state.stacks.sources():
        tree = state.stacks.tree(source)
        title = f"{source}: last {state.stacks.seconds:g}s"
        panels.append((source, tree.value, state.stacks.unit(source),
                       await _panel(request, view, Panel(title, frame=tree,
                                                         unit=state.stacks.unit(source)))))
    attached = sorted(state.attached.items(), key=lambda kv: -kv[1].at)
    return render(request, "flamegraphs.html", topics=("stacks",), panels=panels, view=view,
                  views=console.views("frames"), attached=attached)


def _attached_or_404(request: web.Request) -> tuple[str, Attached]:
    key = request.match_info["key"]
    graph = console_of(request).state.attached.get(key)
    if graph is None:
        raise web.HTTPNotFound(text=f"no flamegraph {key!r} (only the last ones are kept)")
    return key, graph


async def attached(request: web.Request) -> web.Response:
    key, graph = _attached_or_404(request)
    view = request.query.get("view", "flame")
    html = ""
    if graph.frame is not None:
        html = await _panel(request, view, Panel(f"{graph.rule}: {graph.source} when it fired",
                                                 frame=graph.frame, unit=graph.unit))
    return render(request, "attached.html", graph=graph, key=key, html=html, view=view,
                  views=console_of(request).views("frames"))


async def attached_document(request: web.Request) -> web.Response:
    """A graph a ``flamegraph`` action published, sandboxed: its script runs without origin."""
    _, graph = _attached_or_404(request)
    media = graph.media_type or "application/octet-stream"
    response = web.Response(body=graph.data, content_type=media.split(";")[0])
    response.headers["Content-Security-Policy"] = "sandbox allow-scripts; default-src 'none'; " \
                                                  "style-src 'unsafe-inline'; script-src " \
                                                  "'unsafe-inline'"
    return response


async def visualizations(request: web.Request) -> web.Response:
    console = console_of(request)
    plugins = sorted(console.visualizations.items())
    return render(request, "visualizations.html", plugins=plugins,
                  sources=console.state.stacks.sources())


#: Matchers in the form are separated by commas or new lines, outside double quotes.
_MATCHER_SPLIT = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)|\n')


async def silences(request: web.Request) -> web.Response:
    store = console_of(request).silences
    listed = list(await store.list()) if store is not None else []
    return render(request, "silences.html", topics=("silences",), available=store is not None,
                  silences=listed)


async def add_silence(request: web.Request) -> web.Response:
    store = console_of(request).silences
    if store is None:
        return problem(404, "silences are not available in this flarebus")
    form = await request.post()
    matchers = [text.strip() for text in _MATCHER_SPLIT.split(str(form.get("matchers", "")))
                if text.strip()]
    if not matchers:
        return problem(400, 'a silence needs at least one matcher, e.g. host="web-1"')
    try:
        duration = parse_duration(str(form.get("duration", "1h")))
        silence_id = await store.add(matchers, duration, str(form.get("comment", "")),
                                     str(form.get("created_by", "") or "web console"))
    except (UsageError, ValueError, SilenceError) as exc:
        return problem(400, str(exc))
    console_of(request).state.changes.bump("silences")
    return web.json_response({"silence": silence_id})


async def expire_silence(request: web.Request) -> web.Response:
    store = console_of(request).silences
    if store is None:
        return problem(404, "silences are not available in this flarebus")
    await store.expire(request.match_info["id"])
    console_of(request).state.changes.bump("silences")
    return web.json_response({"expired": request.match_info["id"]})
