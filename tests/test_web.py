"""The web console over real HTTP and a real NATS: pages, escaping, paging, writes, live events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from flarebus import bus
from flarebus.config import Config, NatsSettings, load_config
from flarebus.errors import UsageError
from flarebus.labelmatch import parse_matcher
from flarebus.nats_server import EmbeddedNats
from flarebus.registry import discover
from flarebus.silences import add_silence, get_silence, new_silence, silences_bucket
from flarebus.summary import RuleInfo, SeriesInfo
from flarebus.web.series import Row, live_rows, parse_matchers, select
from flarebus.web.server import running_console
from tests.engine_support import stream_triggers
from tests.support import run_flarebus, start_flarebus
from tests.web_support import (
    eventually,
    make_trigger,
    publish_dead_letter,
    publish_trigger,
    put_summary,
    summary,
)

TOKEN = "s3cret-token"
RULE = RuleInfo(name="cpu_high", metric="cpu.usage", file="rules/test.yaml", line=3,
                threshold="> 90", for_seconds=30.0, severity="critical")


def console_config(server: EmbeddedNats, token: str | None, plugin_dir: Path | None = None
                   ) -> Config:
    config = Config(nats=NatsSettings(servers=[server.url], name="flarebus-web-test"))
    config.web.token = token
    config.web.listen = "127.0.0.1:0"
    config.worker.plugin_dir = str(plugin_dir) if plugin_dir else None
    return config


VIEW_PLUGIN = '''
from html import escape
from flarebus.plugin import Visualization

class Leaves(Visualization):
    """Counts leaves."""
    name = "leaves"
    accepts = "frames"

    def render(self, panel):
        leaves = [f.name for _, f in panel.frame.walk() if not f.children]
        return "<p class=leaves>" + escape(", ".join(sorted(leaves))) + "</p>"

plugin = Leaves()
'''
SERIES_PLUGIN = '''
from html import escape

class Hosts:
    """Lists a rule's hosts (duck-typed: no base class)."""
    name = "hosts"
    accepts = "series"

    async def render(self, panel):
        hosts = sorted(s.labels.get("host", "") for s in panel.series)
        return "<p class=hosts>" + escape(panel.rule + ": " + " ".join(hosts)) + "</p>"

plugin = Hosts()
'''


@pytest.fixture(scope="module")
async def console(private_nats: EmbeddedNats,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A console with a write token, the real silences bucket and a plugin dir; its URL."""
    plugins = tmp_path_factory.mktemp("web-plugins")
    (plugins / "leaves.py").write_text(VIEW_PLUGIN)
    (plugins / "hosts.py").write_text(SERIES_PLUGIN)
    async with running_console(console_config(private_nats, TOKEN, plugins)) as url:
        yield url


@pytest.fixture
async def http(console: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console, timeout=10.0) as client:
        yield client


async def page_with(http: httpx.AsyncClient, path: str, text: str) -> str:
    async def check() -> str | None:
        body = (await http.get(path)).text
        return body if text in body else None
    return str(await eventually(check, what=f"{text!r} on {path}"))


class TestPages:
    async def test_every_page_renders(self, http: httpx.AsyncClient) -> None:
        """Each page answers 200 with its heading and the navigation marks it current."""
        for path, heading in [("/", "Overview"), ("/series", "Series"), ("/triggers", "Triggers"),
                              ("/flamegraphs", "Flamegraphs"), ("/silences", "Silences"),
                              ("/visualizations", "Visualizations")]:
            response = await http.get(path)
            assert response.status_code == 200, path
            assert f"<h1>{heading}</h1>" in response.text
            assert f'<a href="{path}" aria-current="page">' in response.text

    async def test_annotations_and_labels_are_escaped(self, http: httpx.AsyncClient,
                                                      private_nc: Client) -> None:
        """A rule's annotations are user text: markup in them is shown, never run."""
        trigger = make_trigger("xss_rule", host="<img src=x onerror=alert(1)>",
                               annotations={"summary": "<script>alert('x')</script> & more"})
        await publish_trigger(private_nc, trigger)
        body = await page_with(http, "/triggers?rule=xss_rule", "xss_rule")
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in body
        assert "<script>alert" not in body and "<img src=x" not in body

    async def test_the_chosen_filters_stay_chosen(self, http: httpx.AsyncClient) -> None:
        """A filtered page shows its filters as chosen (and the labels as typed)."""
        series = (await http.get("/series", params={"state": "pending",
                                                    "labels": 'host="a<b"'})).text
        assert "<option selected>pending</option>" in series
        assert 'value="host=&#34;a&lt;b&#34;"' in series and "with these filters" in series
        triggers = (await http.get("/triggers?state=dead")).text
        assert '<option value="dead" selected>dead letters</option>' in triggers
        assert "with these filters" not in (await http.get("/series")).text

    async def test_a_repeat_is_marked(self, http: httpx.AsyncClient, private_nc: Client
                                      ) -> None:
        """A second firing of one activation (the rule's repeat) says so; the first does not."""
        first = make_trigger("repeat_rule", at=time.time() - 60)
        again = msgspec.structs.replace(first, id=first.id + "-r1", at=time.time())
        for t in (first, again):
            await publish_trigger(private_nc, t)
        body = await page_with(http, "/triggers?rule=repeat_rule", "2 messages")
        newest, oldest = body.split('<li class="trigger')[1:3]
        assert ">repeat</span>" in newest and ">repeat</span>" not in oldest

    async def test_a_fragment_request_gets_only_main(self, http: httpx.AsyncClient) -> None:
        """What the live refresh fetches: the page's main content, no document around it."""
        body = (await http.get("/series", headers={"X-Fragment": "main"})).text
        assert body.lstrip().startswith("<h1>Series</h1>") and "<html" not in body

    async def test_overview_lists_every_engine(self, http: httpx.AsyncClient,
                                               private_nc: Client) -> None:
        """Several engines (shards, replicas) each have a row, and the rules their file:line."""
        for shard in ("0/2", "1/2"):
            await put_summary(private_nc, f"ov-{shard.replace('/', '-of-')}",
                              summary(f"ov-{shard}", [], [RULE]))
        body = await page_with(http, "/", "ov-1/2")
        assert "ov-0/2" in body and "rules/test.yaml:3" in body

    async def test_overview_counts_inactive_series_per_rule(self, http: httpx.AsyncClient,
                                                           private_nc: Client) -> None:
        """Inactive = tracked - pending - firing, summed over the engines that hold the rule."""
        for shard, (tracked, pending, firing) in (("0/2", (7, 1, 2)), ("1/2", (3, 0, 0))):
            rule = msgspec.structs.replace(RULE, name="quiet_rule", tracked=tracked,
                                           pending=pending, firing=firing)
            await put_summary(private_nc, f"in-{shard.replace('/', '-of-')}",
                              summary(f"in-{shard}", [], [rule]))
        body = await page_with(http, "/", "in-1/2")
        row = body[body.index('id="rule-quiet_rule"'):]
        row = row[:row.index("</tr>")]
        assert 'inactive-count">7<' in row, row


class TestSeries:
    def test_matchers_parse_like_prometheus(self) -> None:
        """The four operators, quoted or bare values, with or without braces."""
        ms = parse_matchers('{host="web-1", zone=~"eu-.*", env!="dev", team!~"a|b"}')
        labels = {"host": "web-1", "zone": "eu-west", "env": "prod", "team": "c"}
        assert [m.op for m in ms] == ["=", "=~", "!=", "!~"]
        assert all(m.matches(labels) for m in ms)
        assert not parse_matchers("host=web-2")[0].matches(labels)

    @pytest.mark.parametrize("text", ['host=~"("', "=", 'host "x"'])
    def test_a_bad_matcher_says_what_is_wrong(self, text: str) -> None:
        """A regex that does not compile, or text that is no matcher: UsageError."""
        with pytest.raises(UsageError, match="matcher"):
            parse_matchers(text)

    def test_a_newer_trigger_overrides_the_summary(self) -> None:
        """Summaries lag by a checkpoint; a trigger after it fires or resolves its series."""
        then = time.time() - 10
        pending = SeriesInfo(rule="cpu_high", series='cpu.usage{host="a"}', state="pending",
                             since=then, value=95.0, labels={"host": "a"})
        base = [summary("0/1", [pending], [RULE], updated_at=then)]
        fired = live_rows(base, [make_trigger(host="a")])
        assert [r.info.state for r in fired] == ["firing"]
        resolved = live_rows(base, [make_trigger(host="a"),
                                    make_trigger(host="a", state="resolved")])
        assert resolved == []
        older = live_rows(base, [make_trigger(host="a", at=then - 5)])
        assert [r.info.state for r in older] == ["pending"]

    def test_select_pages_filters_and_sorts(self) -> None:
        """Firing before pending; filters before paging; a page past the end is the last."""
        rows = [Row(SeriesInfo(rule="r", series=f"s{i}", state="pending" if i % 2 else "firing",
                               labels={"i": str(i)}), "0/1") for i in range(10)]
        page = select(rows, state="", page=9, per_page=3)
        assert (page.total, page.pages, page.page, len(page.rows)) == (10, 4, 4, 1)
        assert select(rows, per_page=5).rows[0].info.state == "firing"
        assert select(rows, matchers=parse_matchers('i=~"[0-4]"')).total == 5

    async def test_ten_thousand_series_are_paged_on_the_server(
            self, http: httpx.AsyncClient, private_nc: Client) -> None:
        """Ten engines listing 1,000 series each: one page of 50 rows goes to the browser."""
        for e in range(10):
            states = [SeriesInfo(rule="cpu_high", series=f'cpu.usage{{host="h{e}-{i}"}}',
                                 state="firing" if i % 4 == 0 else "pending", since=time.time(),
                                 value=91.0 + i % 9, labels={"host": f"h{e}-{i}", "engine": str(e)})
                      for i in range(1000)]
            await put_summary(private_nc, f"big-{e}", summary(f"big{e}", states, [RULE]))
        body = await page_with(http, "/series?labels=engine%3D~%22.%2B%22", "10,000 series")
        assert body.count('<tr class="row-') == 50 and "page 1 of 200" in body
        page2 = (await http.get("/series?labels=engine%3D~%22.%2B%22&page=2")).text
        assert "page 2 of 200" in page2 and 'rel="prev"' in page2
        one = (await http.get('/series?labels=host%3D%22h7-12%22')).text
        assert one.count('<tr class="row-') == 1 and "h7-12" in one

    async def test_a_series_visualization_draws_a_rules_series(
            self, http: httpx.AsyncClient, private_nc: Client) -> None:
        """A plugin that accepts series gets the filtered series of the chosen rule."""
        states = [SeriesInfo(rule="mem_high", series=f'mem{{host="{h}"}}', state="firing",
                             labels={"host": h}) for h in ("b<1>", "a")]
        await put_summary(private_nc, "viz-0", summary("viz", states, [RULE]))
        body = await page_with(http, "/series?rule=mem_high&view=hosts", "class=hosts")
        assert "<p class=hosts>mem_high: a b&lt;1&gt;</p>" in body

    async def test_a_bad_filter_is_shown_not_crashed_on(self, http: httpx.AsyncClient) -> None:
        """A regex that does not compile: 400, the page with the error and its form."""
        response = await http.get("/series", params={"labels": 'host=~"("'})
        assert response.status_code == 400
        assert 'role="alert"' in response.text and "bad regex" in response.text


class TestWrites:
    async def test_requeue_needs_the_token(self, http: httpx.AsyncClient,
                                           private_nc: Client) -> None:
        """No token or a wrong one is refused and the dead letter stays; the right one
        publishes the trigger again and removes the dead letter."""
        trigger = make_trigger("requeue_rule")
        seq = await publish_dead_letter(private_nc, trigger)
        await page_with(http, "/triggers?state=dead", "requeue_rule")
        url = f"/dead/{seq}/requeue"
        assert (await http.post(url)).status_code == 401
        assert (await http.post(url, headers={"X-Flarebus-Token": "wrong"})).status_code == 401
        foreign = await http.post(url, headers={"X-Flarebus-Token": TOKEN,
                                                "Origin": "https://evil.example"})
        assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
        host = httpx.URL(str(http.base_url)).netloc.decode()
        proxied = await http.post(url, headers={"Origin": f"https://{host}"})  # TLS proxy
        assert proxied.status_code == 401  # past the origin check, stopped by the token
        js = private_nc.jetstream()
        assert (await js.get_msg(bus.TRIGGERS_STREAM, seq)).subject.startswith("triggers.dead.")
        done = await http.post(url, headers={"X-Flarebus-Token": TOKEN})
        assert done.status_code == 200, done.text
        assert done.json()["trigger"] == trigger.id
        again = await stream_triggers(private_nc, "triggers.requeue_rule")
        assert [t.id for t in again] == [trigger.id]
        with pytest.raises(NotFoundError):
            await js.get_msg(bus.TRIGGERS_STREAM, seq)
        gone = await http.post(url, headers={"X-Flarebus-Token": TOKEN})
        assert gone.status_code == 404 and "gone" in gone.json()["error"]

    async def test_a_console_without_token_is_read_only(self, private_nats: EmbeddedNats
                                                        ) -> None:
        """No web.token: every write is refused, saying how to allow them."""
        async with running_console(console_config(private_nats, None)) as url, \
                httpx.AsyncClient(base_url=url) as client:
            page = (await client.get("/triggers")).text
            assert "read-only" in page and "Write token" not in page
            refused = await client.post("/dead/1/requeue", headers={"X-Flarebus-Token": "x"})
            assert refused.status_code == 403 and "web.token" in refused.json()["error"]

    async def test_silences_list_add_and_expire(self, http: httpx.AsyncClient,
                                                private_nc: Client) -> None:
        """Through the real FLAREBUS_SILENCES bucket: create (token needed), listed, expired."""
        form = {"matchers": 'rule="cpu_high", host=~"web-.*"', "duration": "2h",
                "comment": "deploy <b>now</b>", "created_by": "ana"}
        assert (await http.post("/silences", data=form)).status_code == 401
        added = await http.post("/silences", data=form, headers={"X-Flarebus-Token": TOKEN})
        sid = added.json()["silence"]
        kv = await silences_bucket(private_nc.jetstream())
        stored = await get_silence(kv, sid)
        assert [m.text for m in stored.matchers] == ["rule=cpu_high", 'host=~"web-.*"']
        assert stored.created_by == "ana"
        body = (await http.get("/silences")).text
        assert "deploy &lt;b&gt;now&lt;/b&gt;" in body and f"/silences/{sid}/expire" in body
        await http.post(f"/silences/{sid}/expire", headers={"X-Flarebus-Token": TOKEN})
        assert (await get_silence(kv, sid)).state(time.time()) == "expired"

    async def test_a_silence_added_elsewhere_is_listed(self, http: httpx.AsyncClient,
                                                      private_nc: Client) -> None:
        """One added as `flarebus silence add` does (the shared API) shows on the page."""
        kv = await silences_bucket(private_nc.jetstream())
        sid = await add_silence(kv, new_silence([parse_matcher("host=db-9")], 600,
                                                comment="from the cli"))
        body = (await http.get("/silences")).text
        assert sid in body and "host=db-9" in body and "from the cli" in body

    async def test_a_bad_matcher_is_refused_with_why(self, http: httpx.AsyncClient) -> None:
        """A matcher without an operator, or one that mutes everything: 400 and the reason."""
        for text, why in (("hostweb", "no operator"), ('host=~".*"', "match every trigger")):
            refused = await http.post("/silences", data={"matchers": text, "duration": "1h"},
                                      headers={"X-Flarebus-Token": TOKEN})
            assert refused.status_code == 400 and why in refused.json()["error"], text


class TestLiveAndGraphs:
    async def test_events_announce_what_changed(self, http: httpx.AsyncClient,
                                                private_nc: Client) -> None:
        """The event stream names the topic a new trigger changed."""
        async with http.stream("GET", "/events") as stream:
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            await publish_trigger(private_nc, make_trigger("live_rule"))
            seen = []
            async for line in lines:
                seen.append(line)
                if line.startswith("data:") and "triggers" in line:
                    break
            assert "event: change" in seen

    async def test_a_change_before_the_stream_opens_is_not_missed(
            self, http: httpx.AsyncClient, private_nc: Client) -> None:
        """A page's event stream starts at the version it was rendered at (data-version)."""
        page = (await http.get("/triggers")).text
        version = int(page.split('data-version="')[1].split('"')[0])
        await publish_trigger(private_nc, make_trigger("between_rule"))
        await page_with(http, "/triggers?rule=between_rule", "between_rule")

        async def first_change() -> str:
            async with http.stream("GET", f"/events?since={version}") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        return line
            return ""
        assert "triggers" in await asyncio.wait_for(first_change(), 10.0)

    async def test_stack_windows_render_in_every_frame_view(self, http: httpx.AsyncClient,
                                                            private_nc: Client) -> None:
        """Built-in flame/icicle/top views and a plugin dir's view draw a source's window."""
        sample = {"source": "webapp", "stacks": [
            {"frames": ["main", "handle", "hot_loop"], "weight": 8},
            {"frames": ["main", "idle"], "weight": 2}]}
        import json
        await private_nc.publish("stacks.webapp", json.dumps(sample).encode())
        flame = await page_with(http, "/flamegraphs", "webapp")
        assert '"n":"hot_loop"' in flame and 'data-orientation="up"' in flame
        assert 'data-orientation="down"' in (await http.get("/flamegraphs?view=icicle")).text
        top = (await http.get("/flamegraphs?view=top")).text
        assert "<code>hot_loop</code></th><td>8</td><td>80.0%</td>" in top
        leaves = (await http.get("/flamegraphs?view=leaves")).text
        assert '<p class=leaves>hot_loop, idle</p>' in leaves
        assert "leaves" in (await http.get("/visualizations")).text

    async def test_a_stack_rule_trigger_keeps_its_window(self, http: httpx.AsyncClient,
                                                         private_nc: Client) -> None:
        """A firing stack-rule trigger is linked to the flamegraph of when it fired; a graph a
        flamegraph action publishes is served sandboxed."""
        import json
        await private_nc.publish("stacks.svc", json.dumps({"source": "svc", "stacks": [
            {"frames": ["main", "db_query"], "weight": 5}]}).encode())
        await page_with(http, "/flamegraphs", "svc")
        trigger = make_trigger("db_hot", metric="stacks.svc")
        await publish_trigger(private_nc, trigger)
        body = await page_with(http, "/triggers?rule=db_hot", "flamegraph when it fired")
        link = body.split('class="graph" href="')[1].split('"')[0]
        assert '"n":"db_query"' in (await http.get(link)).text
        await private_nc.publish("flamegraphs.db_hot", b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                 headers={"Flarebus-Trigger": trigger.id,
                                          "Content-Type": "image/svg+xml"})
        listing = await page_with(http, "/flamegraphs", "published by a flamegraph action")
        key = listing.split("published by a flamegraph action")[0].rsplit(
            'href="/flamegraphs/', 1)[1].split('"')[0]
        document = await http.get(f"/flamegraphs/{key}/document")
        assert document.headers["content-type"].startswith("image/svg+xml")
        assert "sandbox" in document.headers["content-security-policy"]


class TestCommandAndConfig:
    def test_web_help_teaches(self) -> None:
        """--help says what it shows, where it listens, how writes are allowed, with examples."""
        result = run_flarebus("web", "--help")
        assert result.returncode == 0
        for text in ("--listen", "127.0.0.1:8090", "FLAREBUS_WEB_TOKEN", "read-only",
                     "examples:"):
            assert text in result.stdout

    def test_a_bad_listen_address_is_one_line(self) -> None:
        """Not host:port: exit 1 with one line naming the address, before connecting."""
        result = run_flarebus("web", "--listen", "nowhere", "--nats", "nats://127.0.0.1:1")
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "flarebus web: web console on nowhere: is not host:port (e.g. 127.0.0.1:8090)"]

    def test_unreachable_nats_is_one_line(self) -> None:
        """No server at --nats: exit 1 with one line naming it (no silent wait)."""
        result = run_flarebus("web", "--listen", "127.0.0.1:0", "--nats", "nats://127.0.0.1:1")
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("flarebus web: NATS at nats://127.0.0.1:1")

    @pytest.mark.parametrize("how", ["--no-web", "port taken"])
    def test_up_runs_without_its_console(self, how: str, private_nats: EmbeddedNats,
                                         tmp_path: Path) -> None:
        """`up --no-web` serves none; a taken web.listen port only warns (a laptop may run
        two): either way the start-up summary says `console off` and up runs."""
        import socket

        from tests.test_up import Output, family, stop
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        (tmp_path / "flarebus.yaml").write_text(
            f"web: {{listen: '127.0.0.1:{taken.getsockname()[1]}'}}\n")
        args = ["up", "--nats", private_nats.url, "--no-sampler", "--status-every", "0"]
        proc = start_flarebus(*args, *(["--no-web"] if how == "--no-web" else []),
                              cwd=tmp_path)
        out = Output(proc)
        try:
            out.wait_for(r"console\s+off", 60)
            assert ("address already in use" in out.text().lower()) == (how == "port taken")
        finally:
            assert stop(proc, family(proc.pid)) == 0
            taken.close()

    def test_the_token_comes_from_the_environment(self) -> None:
        """FLAREBUS_WEB_TOKEN sets web.token (never a flag: a command line is public)."""
        config = load_config(env={"FLAREBUS_WEB_TOKEN": "abc", "FLAREBUS_WEB_LISTEN": ":9"})
        assert (config.web.token, config.web.listen) == ("abc", ":9")

    def test_visualizations_are_a_plugin_kind(self) -> None:
        """The registry finds the built-in views as the visualization kind."""
        registry = discover(use_entry_points=False)
        assert set(registry.names("visualization")) == {"flame", "icicle", "top"}
