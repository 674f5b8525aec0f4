"""Silences: Alertmanager's matchers, the KV-backed API, and `flarebus silence`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from flarebus.config import load_config
from flarebus.errors import ConfigError, SilenceError
from flarebus.gate_config import InhibitRule
from flarebus.labelmatch import LabelMatcher, alert_labels, parse_matcher
from flarebus.nats_server import EmbeddedNats
from flarebus.silences import (
    Silence,
    SilenceWatch,
    add_silence,
    expire_silence,
    get_silence,
    list_silences,
    new_silence,
    silences_bucket,
)
from tests.plugin_pkg.harness import trigger
from tests.support import run_flarebus

ALERT = {"host": "web-1", "zone": "eu", "rule": "high-cpu", "severity": "warning"}


class TestMatchers:
    """Alertmanager's semantics: four operators, anchored regexes, absent is empty."""

    @pytest.mark.parametrize(("text", "matches"), [
        ("host=web-1", True),
        ("host=web", False),
        ("host!=web-2", True),
        ("host!=web-1", False),
        ('host=~"web-.*"', True),
        ("host=~web", False),  # anchored: the whole value must match
        ("host=~eb-1", False),
        ("host!~db-.*", True),
        ("host!~web-[0-9]", False),
        ("rule=high-cpu", True),
        ("severity=~warning|critical", True),
        ("absent=", True),  # an absent label is the empty string
        ("absent!=", False),
        ('absent=~".+"', False),
        ("absent!~.+", True),
        ("zone=eu", True),
        ('zone="e\\u0075"', True),  # a quoted value is a JSON string
        ("host=a!=b", False),  # the first operator splits: host equals "a!=b"
    ])
    def test_matcher_against_an_alert(self, text: str, matches: bool) -> None:
        """Each operator and edge of the semantics, against one alert's labels."""
        assert parse_matcher(text).matches(ALERT) is matches

    @pytest.mark.parametrize(("text", "error"), [
        ("host", "has no operator"),
        ("9host=x", "is not a label name"),
        ("host=~(", "the regex does not compile"),
        ('host="unterminated', None),  # a lone quote is part of the value
    ])
    def test_bad_matchers_say_why(self, text: str, error: str | None) -> None:
        """A matcher that cannot be read is a ValueError naming what is wrong."""
        if error is None:
            assert parse_matcher(text).value == '"unterminated'
            return
        with pytest.raises(ValueError, match=error):
            parse_matcher(text)

    def test_a_trigger_is_matched_on_labels_rule_and_severity(self) -> None:
        """rule, alertname and severity come from the trigger and win over labels of that name."""
        t = trigger("high-cpu", labels={"host": "web-1", "rule": "spoofed"})
        assert alert_labels(t) == {"host": "web-1", "rule": "high-cpu",
                                   "alertname": "high-cpu", "severity": "warning"}

    def test_a_stored_matcher_with_a_bad_regex_is_refused_on_decode(self) -> None:
        """A Silence read from the bucket is checked like a typed one."""
        with pytest.raises(msgspec.ValidationError, match="does not compile"):
            msgspec.json.decode(b'{"name": "h", "op": "=~", "value": "("}', type=LabelMatcher)

    def test_inhibit_rules_take_the_map_shorthand_and_matcher_strings(self) -> None:
        """`source: {severity: critical}` and `source_matchers: [...]` both give matchers."""
        rule = InhibitRule(source={"severity": "critical"},
                           target_matchers=['severity=~"warn.*"'], equal=["host"])
        assert rule.sources() == [LabelMatcher("severity", "=", "critical")]
        assert rule.targets() == [LabelMatcher("severity", "=~", "warn.*")]
        with pytest.raises(ValueError, match="needs a target"):
            InhibitRule(source={"severity": "critical"})


class TestWatch:
    """A worker's copy of the silences answers "which silence mutes this?" per trigger."""

    def test_indexed_and_regex_only_silences_mute_what_they_match(self) -> None:
        """Silences with an equality matcher (indexed) and without one (checked for every
        trigger) both mute; a replaced (expired) or deleted one no longer does."""
        watch = SilenceWatch(None)  # type: ignore[arg-type]  # fed by hand, never started
        by_host = new_silence([parse_matcher("host=web-1"), parse_matcher("zone!=us")], 60)
        by_regex = new_silence([parse_matcher("host=~db-[0-9]+")], 60)
        pending = new_silence([parse_matcher("host=cache-1")], 60, starts_at=time.time() + 600)
        for silence in (by_host, by_regex, pending):
            watch.add(silence)
        now = time.time()
        assert watch.muting({**ALERT, "zone": "eu"}, now) is by_host
        assert watch.muting({**ALERT, "zone": "us"}, now) is None
        assert watch.muting({**ALERT, "host": "db-12"}, now) is by_regex
        assert watch.muting({**ALERT, "host": "db-x"}, now) is None
        assert watch.muting({**ALERT, "host": "cache-1"}, now) is None  # not started yet
        watch.add(msgspec.structs.replace(by_host, ends_at=now - 1))  # expired elsewhere
        assert watch.muting({**ALERT, "zone": "eu"}, now) is None
        watch._delete(by_regex.id)  # deleted from the bucket
        assert watch.muting({**ALERT, "host": "db-12"}, now) is None
        assert set(watch.silences) == {by_host.id, pending.id}


class TestConfig:
    """`inhibit:` and `rate_limits:` in flarebus.yaml, checked like every config section."""

    def test_sections_load(self, tmp_path: Path) -> None:
        """Both forms of an inhibit rule and the rate limits decode."""
        path = tmp_path / "flarebus.yaml"
        path.write_text("inhibit:\n  - source: {severity: critical}\n"
                        "    target_matchers: ['severity=~\"warn.*\"']\n    equal: [host]\n"
                        "rate_limits:\n  default: 5/1m\n  actions: {slack: none}\n")
        config = load_config(path, env={})
        assert config.inhibit[0].targets() == [LabelMatcher("severity", "=~", "warn.*")]
        assert config.rate_limits.rate_for("r", "slack") is None
        assert config.rate_limits.rate_for("r", "log") == (5, 60.0)

    @pytest.mark.parametrize(("text", "error"), [
        ("inhibit:\n  - target: {severity: warning}\n",
         "2:5: inhibit[0]: an inhibit rule needs a source"),
        ("inhibit:\n  - source: {a: b}\n    target_matchers: ['x=~(']\n",
         "2:5: inhibit[0]: x=~'(': the regex does not compile"),
        ("inhibit:\n  - source: {a: b}\n    target: {c: d}\n    equal: [9x]\n",
         "4:13: inhibit[0].equal[0]"),
        ("rate_limits:\n  default: 5/minute\n", "2:12: rate_limits.default: \"5/minute\" is "
                                                 "not a rate"),
    ])
    def test_mistakes_are_reported_at_their_place(self, tmp_path: Path, text: str,
                                                  error: str) -> None:
        """A bad inhibit rule or rate is a file:line:col problem, like any config mistake."""
        path = tmp_path / "flarebus.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert error in str(caught.value)


class TestApi:
    """add/list/expire, the small API any role (the CLI, the web console) calls."""

    async def test_add_list_expire(self, private_nc: Client) -> None:
        """A new silence is active; expired it stays listed with state expired."""
        kv = await silences_bucket(private_nc.jetstream())
        silence = new_silence([parse_matcher("host=web-1")], 60, comment="disk swap",
                              created_by="ops")
        await add_silence(kv, silence)
        now = time.time()
        listed = {s.id: s for s in await list_silences(kv)}
        assert listed[silence.id].state(now) == "active"
        assert listed[silence.id].comment == "disk swap"
        expired = await expire_silence(kv, silence.id)
        assert expired.state(time.time()) == "expired"
        assert {s.id: s for s in await list_silences(kv)}[silence.id].ends_at == expired.ends_at
        with pytest.raises(SilenceError, match="already expired"):
            await expire_silence(kv, silence.id)

    async def test_silences_past_their_retention_are_deleted(self, private_nc: Client) -> None:
        """A silence that ended over a day ago is no longer listed, nor stored."""
        kv = await silences_bucket(private_nc.jetstream())
        old = Silence(id="old-one", matchers=[parse_matcher("host=x")], starts_at=0,
                      ends_at=1000)
        await add_silence(kv, old)
        assert "old-one" not in {s.id for s in await list_silences(kv)}
        with pytest.raises(SilenceError, match="no silence"):
            await expire_silence(kv, "old-one")

    async def test_workers_delete_silences_past_their_retention(self,
                                                                private_nc: Client) -> None:
        """A watch's housekeeping deletes what ended over a day ago, from memory and bucket."""
        kv = await silences_bucket(private_nc.jetstream())
        old = Silence(id="older-one", matchers=[parse_matcher("host=x")], starts_at=0,
                      ends_at=1000)
        await add_silence(kv, old)
        watch = SilenceWatch(kv)
        await watch.start()
        try:
            assert "older-one" in watch.silences
            await watch.forget_expired()
            assert "older-one" not in watch.silences
            with pytest.raises(SilenceError, match="no silence"):
                await get_silence(kv, "older-one")
        finally:
            await watch.close()

    @pytest.mark.parametrize(("matchers", "duration", "error"), [
        ([], 60, "at least one matcher"),
        (["host=~.*"], 60, "match every trigger"),
        (["host="], 60, "match every trigger"),
        (["host=x"], 0, "longer than 0s"),
    ])
    def test_a_silence_muting_everything_or_nothing_is_refused(
            self, matchers: list[str], duration: float, error: str) -> None:
        """As Alertmanager: no silence that matches every alert, none without a span."""
        with pytest.raises(SilenceError, match=error):
            new_silence([parse_matcher(m) for m in matchers], duration)


class TestCommand:
    """`flarebus silence add | list | expire` against a real server."""

    def test_add_prints_the_id_list_shows_state_expire_ends_it(
            self, private_nats: EmbeddedNats) -> None:
        """The id from add is in list (text and --json) as active, then expired after expire."""
        nats = ("--nats", private_nats.url)
        added = run_flarebus("silence", "add", "-m", "host=web-1", "-m", "rule=high-cpu",
                             "--for", "2h", "--comment", "disk swap", "--author", "ops", *nats)
        assert added.returncode == 0, added.stderr
        silence_id = added.stdout.strip()
        listed = run_flarebus("silence", "list", *nats)
        [line] = [x for x in listed.stdout.splitlines() if x.startswith(silence_id)]
        assert " active " in line and "host=web-1 rule=high-cpu" in line
        assert "by ops" in line and "# disk swap" in line
        as_json = [json.loads(x) for x in run_flarebus("silence", "list", "--json",
                                                        *nats).stdout.splitlines()]
        [mine] = [s for s in as_json if s["id"] == silence_id]
        assert mine["state"] == "active"
        assert mine["matchers"][0] == {"name": "host", "op": "=", "value": "web-1"}
        expired = run_flarebus("silence", "expire", silence_id, *nats)
        assert expired.returncode == 0 and expired.stdout.strip() == f"expired {silence_id}"
        listed = run_flarebus("silence", "list", *nats)
        assert f"{silence_id}  expired " in listed.stdout

    @pytest.mark.parametrize(("args", "code", "message"), [
        (["add", "-m", "host", "--for", "1h"], 2, "argument -m/--matcher: matcher 'host' has "
                                                  "no operator"),
        (["add", "-m", "host=x", "--for", "soon"], 2, "argument --for: 'soon' is not a duration"),
        (["add", "-m", "host=~.*", "--for", "1h"], 1, "flarebus silence: these matchers match "
                                                     "every trigger"),
        (["expire", "no-such-id"], 1, "flarebus silence: no silence 'no-such-id'"),
    ])
    def test_mistakes_are_one_line(self, private_nats: EmbeddedNats, args: list[str],
                                   code: int, message: str) -> None:
        """A bad matcher or duration is a usage error; an unknown id one line, exit 1."""
        result = run_flarebus("silence", *args, "--nats", private_nats.url)
        assert result.returncode == code
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        if code == 1:
            assert len(result.stderr.strip().splitlines()) == 1
