"""The console's aiohttp application: routes, the write guard, rendering, live updates.

Pages are rendered on the server with autoescaping Jinja2 templates (rule
annotations and labels are user text). A request with ``X-Fragment: main``
gets only the page's ``<main>`` content, which is how ``static/console.js``
refreshes a page when ``/events`` (server-sent events) says its topics
changed. Writes (POST) need the configured token in the ``X-Flarebus-Token``
header: a browser sends a custom header cross-origin only after a CORS
preflight, which this server never grants, so a foreign page cannot forge
one (and an ``Origin`` that is not this host is refused outright). With no
token configured the console is read-only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web
from jinja2 import Environment, FileSystemLoader, select_autoescape

from flarebus.durations import format_duration
from flarebus.plugin import VisualizationPlugin
from flarebus.summary import STALE_AFTER
from flarebus.web.feeds import ConsoleState
from flarebus.web.silences import SilenceStore

log = logging.getLogger("flarebus.web")

HERE = Path(__file__).parent
TOKEN_HEADER = "X-Flarebus-Token"
FRAGMENT_HEADER = "X-Fragment"
HEARTBEAT = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Console:
    """What every handler needs: the feeds, the templates, the write token, the plugins."""

    state: ConsoleState
    token: str | None = None
    visualizations: dict[str, VisualizationPlugin] = field(default_factory=dict)
    silences: SilenceStore | None = None
    default_action: str = "log"
    worker_consumer: str = "flarebus-workers"
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(ago=ago, dur=duration_text, clock=clock, num=number)
        self.env.globals.update(stale_after=STALE_AFTER, page_query=page_query)

    def views(self, accepts: str) -> list[str]:
        return sorted(n for n, v in self.visualizations.items() if v.accepts == accepts)


CONSOLE = web.AppKey("console", Console)
#: the change version when the request came in (each request runs in a task of its own)
VERSION: ContextVar[int | None] = ContextVar("flarebus_web_version", default=None)


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def page_query(request: web.Request, page: int) -> str:
    """This page's query string with another page number."""
    query = dict(request.query)
    query["page"] = str(page)
    return urlencode(query)


def ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    age = time.time() - ts
    return "<1s" if age < 1 else format_duration(round(age))


def duration_text(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(max(0.0, round(seconds, 1)))


def clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"


def render(request: web.Request, template: str, *, topics: tuple[str, ...] = (),
           status: int = 200, **context: Any) -> web.Response:
    """A page, or only its ``<main>`` content for a live refresh."""
    console = console_of(request)
    fragment = request.headers.get(FRAGMENT_HEADER) == "main"
    html = console.env.get_template(template).render(
        request=request, fragment=fragment, topics=" ".join(topics),
        writable=console.token is not None, now=time.time(),
        version=_version(console), **context)
    return web.Response(text=html, status=status, content_type="text/html")


def _version(console: Console) -> int:
    taken = VERSION.get()
    return console.state.changes.version if taken is None else taken


def problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Writes need the token (and a same-origin request); every answer gets safe headers."""
    if request.method not in ("GET", "HEAD"):
        token = console_of(request).token
        origin = request.headers.get("Origin")
        # the host only: behind a TLS proxy the page is https while this server sees http
        if origin is not None and urlsplit(origin).netloc != request.host:
            return problem(403, f"cross-origin write refused (Origin {origin})")
        if token is None:
            return problem(403, "the console is read-only: set web.token in flarebus.yaml "
                                "(or FLAREBUS_WEB_TOKEN) to allow writes")
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return problem(401, f"a write needs the console's token in the {TOKEN_HEADER} "
                                "header (enter it under 'Write token')")
    # the version before anything is read: a change while the page is built is sent again
    VERSION.set(console_of(request).state.changes.version)
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'self'")
    return response


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``change`` with the topics that changed, at most 4 a second."""
    changes = console_of(request).state.changes
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:  # the version the page was rendered at: what changed since is sent at once
        seen = min(int(request.query.get("since", "")), changes.version)
    except ValueError:
        seen = changes.version
    try:
        await response.write(b"retry: 1000\n\n")
        while True:
            version = await changes.wait(seen, HEARTBEAT)
            if version == seen:
                await response.write(b": alive\n\n")
                continue
            topics = changes.since(seen)
            seen = version
            await response.write(f"event: change\ndata: {json.dumps(topics)}\n\n".encode())
            await asyncio.sleep(0.25)  # coalesce bursts (a stack sampler publishes often)
    except ConnectionResetError:  # the page went away (aiohttp's error is one)
        return response


def create_app(console: Console) -> web.Application:
    from flarebus.web import pages

    app = web.Application(middlewares=[guard])
    app[CONSOLE] = console
    app.router.add_get("/", pages.overview, name="overview")
    app.router.add_get("/series", pages.series, name="series")
    app.router.add_get("/triggers", pages.triggers, name="triggers")
    app.router.add_post("/dead/{seq:\\d+}/requeue", pages.requeue_dead)
    app.router.add_get("/flamegraphs", pages.flamegraphs, name="flamegraphs")
    app.router.add_get("/flamegraphs/{key}", pages.attached, name="attached")
    app.router.add_get("/flamegraphs/{key}/document", pages.attached_document)
    app.router.add_get("/visualizations", pages.visualizations, name="visualizations")
    app.router.add_get("/silences", pages.silences, name="silences")
    app.router.add_post("/silences", pages.add_silence)
    app.router.add_post("/silences/{id}/expire", pages.expire_silence)
    app.router.add_get("/events", events)
    app.router.add_static("/static", HERE / "static", append_version=True, name="static")
    return app
