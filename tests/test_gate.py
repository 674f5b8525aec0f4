"""The worker's gate on a real nats-server: silences, inhibition and rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from flarebus import bus
from flarebus.actions.firing import FIRING_BUCKET, RESOLVED_KEPT, FiringAlerts
from flarebus.actions.gate import Gate
from flarebus.actions.gatestatus import summary_decoder, workers_bucket
from flarebus.actions.service import run_worker
from flarebus.config import load_config
from flarebus.events import ActionRef, Trigger, trigger_decoder
from flarebus.gate_config import InhibitRule, RateLimits
from flarebus.labelmatch import parse_matcher
from flarebus.nats_server import EmbeddedNats
from flarebus.silences import add_silence, expire_silence, new_silence, silences_bucket
from tests.engine_support import EngineProcess
from tests.plugin_pkg.harness import (
    connect,
    consumer_idle,
    fresh_stream,
    publish,
    running_worker,
    settings,
    trigger,
    wait_until,
)
from tests.support import collect, run_flarebus
from tests.test_worker import Recorder as Counting


class Recorder(Counting):
    """Counts runs per trigger id and keeps every trigger it ran."""

    def __init__(self, name: str = "rec") -> None:
        super().__init__(name)
        self.triggers: list[Trigger] = []

    async def execute(self, trigger: Trigger) -> None:
        self.triggers.append(trigger)
        await super().execute(trigger)


def verdicts(messages: list[Msg]) -> list[tuple[str, str, str]]:
    """(verdict, reason, trigger id) of each record on triggers.suppressed.<rule>."""
    return [(m.headers[bus.VERDICT_HEADER], m.headers[bus.REASON_HEADER],
             trigger_decoder.decode(m.data).id) for m in messages]


class TestSilences:
    """Silenced triggers run no action, are recorded, and the silence ends by itself."""

    async def test_silence_stops_a_firing_series_repeats_until_it_expires(
            self, private_nats: EmbeddedNats, private_nc: Client, tmp_path: Path) -> None:
        """A silence added while the engine repeats a firing trigger mutes the repeats; they
        run again once it has expired."""
        js = await fresh_stream(private_nc)
        rules = tmp_path / "repeat.yaml"
        rules.write_text("rules:\n  - name: gate-repeat\n    metric: gate.load\n"
                         "    when: \"> 1\"\n    for: 0s\n    repeat: 1s\n    actions: [rec]\n")
        suppressed = await collect(private_nc, bus.suppressed_subject("gate-repeat"))
        rec = Recorder()
        engine = EngineProcess(private_nats.url, [rules]).start()
        try:
            async with running_worker(private_nc, rec):
                await private_nc.publish("metrics.gate.load", json.dumps(
                    {"name": "gate.load", "value": 5, "labels": {"host": "web-1"}}).encode())
                await wait_until(lambda: len(rec.runs) >= 2, what="two runs before the silence")
                kv = await silences_bucket(js)
                silence = new_silence([parse_matcher("host=web-1"),
                                       parse_matcher("rule=gate-repeat")], 3.0)
                await add_silence(kv, silence)
                await suppressed.wait_for(2, timeout=20)
                await wait_until(lambda: any(t.at > silence.ends_at for t in rec.triggers),
                                 timeout=30, what="runs after the silence expired")
        finally:
            engine.stop_ok()
        muted = [trigger_decoder.decode(m.data) for m in suppressed.messages]
        assert {v for v, _, _ in verdicts(suppressed.messages)} == {"silenced"}
        assert {r for _, r, _ in verdicts(suppressed.messages)} == {silence.id}
        assert not set(rec.runs) & {t.id for t in muted}, "a silenced trigger ran its action"
        first, last = min(t.at for t in muted), max(t.at for t in muted)
        # the runs: before the first silenced repeat, and after the last one (resumed)
        runs_between = [t for t in rec.triggers if first < t.at < last]
        assert runs_between == [], f"{len(runs_between)} runs while the silence was active"
        assert any(t.at > last for t in rec.triggers), "the repeats did not resume"

    async def test_silence_from_another_process_reaches_every_worker(
            self, private_nats: EmbeddedNats, private_nc: Client) -> None:
        """`flarebus silence add` in a second process is in both workers' gates, and their
        triggers are then silenced, not run."""
        js = await fresh_stream(private_nc)
        rec = Recorder()
        cfg = settings()
        other = await connect(private_nats.url)
        try:
            async with running_worker(private_nc, rec, worker=cfg) as one, \
                    running_worker(other, rec, worker=cfg) as two:
                result = run_flarebus("silence", "add", "-m", "host=db-9", "-m", "rule=quiet",
                                      "--for", "1h", "--comment", "test",
                                      "--nats", private_nats.url)
                assert result.returncode == 0, result.stderr
                silence_id = result.stdout.strip()
                for worker in (one, two):
                    await wait_until(lambda w=worker: silence_id in w.gate.silences.silences,
                                     timeout=10, what="the silence in every worker's gate")
                suppressed = await collect(private_nc, bus.suppressed_subject("quiet"))
                muted = [trigger("quiet", actions=["rec"], labels={"host": "db-9"})
                         for _ in range(10)]
                await publish(js, muted)
                await suppressed.wait_for(10)
                await wait_until(lambda: consumer_idle(js, cfg.consumer), what="all acked")
                for worker in (one, two):
                    verdict = await worker.gate.judge(muted[0], muted[0].actions)
                    assert (verdict.kind, verdict.reason) == ("silenced", silence_id)
        finally:
            await other.close()
            await (await silences_bucket(js)).delete(silence_id)
        assert rec.runs == {}, "a silenced trigger ran"

    async def test_a_silence_added_after_a_server_restart_is_seen_at_once(
            self, tmp_path: Path) -> None:
        """After nats-server restarts, the gate watches again (nats-py's own watch would
        notice only after ~15 s of missed heartbeats)."""
        with EmbeddedNats(tmp_path / "nats") as server:
            worker_nc, other = await connect(server.url), None
            gate = Gate()
            try:
                await gate.start(worker_nc)
                server.stop()
                server.start()
                await wait_until(lambda: worker_nc.stats["reconnects"] == 1, timeout=30,
                                 what="the reconnect")
                other = await connect(server.url)
                silence = new_silence([parse_matcher("host=after-restart")], 60)
                await add_silence(await silences_bucket(other.jetstream()), silence)
                await wait_until(lambda: gate.silences is not None
                                 and silence.id in gate.silences.silences,
                                 timeout=10, what="the silence in the restarted watch")
            finally:
                await gate.close()
                await worker_nc.close()
                if other is not None:
                    await other.close()

    async def test_expired_silence_mutes_nothing(self, private_nc: Client) -> None:
        """Expiring a silence early lets the next matching trigger run."""
        js = await fresh_stream(private_nc)
        kv = await silences_bucket(js)
        silence = new_silence([parse_matcher("host=~web-[0-9]+")], 3600)
        await add_silence(kv, silence)
        rec = Recorder()
        async with running_worker(private_nc, rec) as worker:
            await wait_until(lambda: silence.id in worker.gate.silences.silences,
                             what="the silence")
            await expire_silence(kv, silence.id)
            await wait_until(lambda: worker.gate.silences.silences[silence.id].ends_at
                             <= time.time(), what="the expiry")
            t = trigger("after", actions=["rec"], labels={"host": "web-12"})
            await publish(js, [t])
            await wait_until(lambda: t.id in rec.done, what="the run")


def _with(t: Trigger, **changes: object) -> Trigger:
    return msgspec.structs.replace(t, **changes)


async def no_firing_alerts(nc: Client) -> None:
    """Forget the source alerts earlier tests left firing (the bucket outlives a worker)."""
    with contextlib.suppress(Exception):
        await nc.jetstream().delete_key_value(FIRING_BUCKET)


class TestInhibition:
    """While a source alert fires, matching targets with equal labels run no action."""

    async def test_critical_suppresses_the_matching_warning_only(self,
                                                               private_nc: Client) -> None:
        """A critical on web-1 inhibits web-1's warning, not web-2's nor web-1's info; once it
        resolves, web-1's warning runs again."""
        js = await fresh_stream(private_nc)
        await no_firing_alerts(private_nc)
        rec = Recorder()
        gate = Gate([InhibitRule(source={"severity": "critical"},
                                 target={"severity": "warning"}, equal=["host"])])
        suppressed = await collect(private_nc, "triggers.suppressed.>")
        async with running_worker(private_nc, rec, gate=gate):
            critical = _with(trigger("disk-full", actions=["rec"], labels={"host": "web-1"}),
                             severity="critical")
            await publish(js, [critical])
            await wait_until(lambda: critical.id in rec.done, what="the critical alert")
            warning_1 = trigger("disk-low", actions=["rec"], labels={"host": "web-1"})
            warning_2 = trigger("disk-low", actions=["rec"], labels={"host": "web-2"})
            info_1 = _with(trigger("disk-info", actions=["rec"], labels={"host": "web-1"}),
                           severity="info")
            await publish(js, [warning_1, warning_2, info_1])
            await wait_until(lambda: {warning_2.id, info_1.id} <= rec.done,
                             what="the uninhibited ones")
            [record] = await suppressed.wait_for(1)
            resolved = _with(critical, id=critical.id + "-resolved", state="resolved",
                             at=critical.at + 1)
            await publish(js, [resolved])
            await wait_until(lambda: resolved.id in rec.done, what="the resolution")
            again = _with(warning_1, id=warning_1.id + "-again", at=resolved.at + 1)
            await publish(js, [again])
            await wait_until(lambda: again.id in rec.done, what="the warning after it")
        assert warning_1.id not in rec.runs
        assert verdicts([record]) == [("inhibited", "disk-full{host=web-1,severity=critical}",
                                       warning_1.id)]

    async def test_a_source_recorded_by_one_worker_inhibits_in_another(
            self, private_nats: EmbeddedNats, private_nc: Client) -> None:
        """The firing source alert is shared through the bus: a second worker's gate knows it."""
        await fresh_stream(private_nc)
        await no_firing_alerts(private_nc)
        rules = [InhibitRule(source_matchers=['severity="critical"'],
                             target_matchers=["severity=~warn.*"], equal=["host"])]
        one, two = Gate(rules), Gate(rules)
        other = await connect(private_nats.url)
        try:
            await one.start(private_nc)
            await two.start(other)
            critical = _with(trigger("cpu-crit", labels={"host": "web-7"}), severity="critical")
            await one.judge(critical, critical.actions)
            warning = trigger("cpu-warn", labels={"host": "web-7"})
            await wait_until(lambda: two.inhibited_by(warning, {**warning.labels,
                                                                "severity": "warning"}),
                             what="the source alert in the second gate")
            assert (await two.judge(warning, warning.actions)).kind == "inhibited"
            ok = trigger("cpu-warn", labels={"host": "web-8"})
            assert (await two.judge(ok, ok.actions)).kind == "run"
        finally:
            await one.close()
            await two.close()
            await other.close()


class TestRateLimits:
    """A token bucket per (rule, action): what is dropped is counted and recorded."""

    async def test_triggers_past_the_limit_do_not_run_and_are_counted(
            self, private_nats: EmbeddedNats, private_nc: Client) -> None:
        """With 3/1h, 5 triggers run the action 3 times; 2 are recorded as rate-limited and
        counted in `flarebus status`; an action with its own `rate_limit: none` runs all 5."""
        js = await fresh_stream(private_nc)
        limited, free = Recorder("limited"), Recorder("free")
        gate = Gate(rate_limits=RateLimits(default="3/1h"))
        suppressed = await collect(private_nc, bus.suppressed_subject("noisy"))
        triggers = [trigger("noisy", actions=["limited", ActionRef("free", rate_limit="none")])
                    for _ in range(5)]
        cfg = settings()
        async with running_worker(private_nc, limited, free, worker=cfg, gate=gate):
            await publish(js, triggers)
            await wait_until(lambda: len(free.done) == 5, what="the unlimited action")
            await wait_until(lambda: consumer_idle(js, cfg.consumer), what="all acked")
            records = await suppressed.wait_for(2)
            kv = await workers_bucket(js)

            async def reported() -> bool:
                entry = await kv.get(gate.reporter.key) if gate.reporter else None
                summary = summary_decoder.decode(entry.value) if entry and entry.value else None
                return summary is not None and summary.suppressed.get("rate-limited") == 2

            await wait_until(reported, what="the worker's summary")
            status = run_flarebus("status", "--nats", private_nats.url)
        assert "rate-limited noisy/limited: 2 dropped" in status.stdout, status.stdout
        assert "rate-limited 2" in status.stdout
        assert len(limited.done) == 3
        assert gate.limiter.dropped == {("noisy", "limited"): 2}
        assert gate.counts["rate-limited"] == 2
        assert {(v, r) for v, r, _ in verdicts(records)} == {("rate-limited",
                                                              "limited (3/3600s)")}

    def test_the_most_specific_setting_wins(self) -> None:
        """The action entry's rate_limit, then rules, then actions, then the built-in and the
        default."""
        limits = RateLimits(default="10/1m", actions={"http": "5/1m"}, rules={"r": "2/1s"})
        assert limits.rate_for("r", "http", "1/1h") == (1, 3600.0)
        assert limits.rate_for("r", "http") == (2, 1.0)
        assert limits.rate_for("x", "http") == (5, 60.0)
        assert limits.rate_for("x", "slack") == (60, 60.0)
        assert limits.rate_for("x", "log") == (10, 60.0)
        assert RateLimits(default="none").rate_for("x", "log") is None


class TestTail:
    """`flarebus tail` shows what the workers did not run, and why."""

    async def test_tail_shows_a_silenced_trigger_with_its_silence(
            self, private_nats: EmbeddedNats, private_nc: Client) -> None:
        """Next to the triggers: a SILENCED line naming the silence (in --json, `suppressed`);
        --no-suppressed leaves it out."""
        js = await fresh_stream(private_nc)
        silence = new_silence([parse_matcher("host=b")], 3600)
        await add_silence(await silences_bucket(js), silence)
        loud, quiet = (trigger("tailed", actions=["rec"], labels={"host": h}) for h in "ab")
        cfg = settings()
        async with running_worker(private_nc, Recorder(), worker=cfg) as worker:
            await wait_until(lambda: silence.id in worker.gate.silences.silences,
                             what="the silence")
            await publish(js, [loud, quiet])
            await wait_until(lambda: consumer_idle(js, cfg.consumer), what="all acked")
        last = trigger("tailed", actions=["rec"])
        await publish(js, [last])  # after the silenced record, with no worker running
        nats = ("--nats", private_nats.url)
        text = run_flarebus("tail", "--all", "--rule", "tailed", "-n", "3", *nats, timeout=30)
        lines = text.stdout.splitlines()
        assert [line.split()[1] for line in lines] == ["FIRING", "FIRING", "SILENCED"], lines
        assert "{host=b}" in lines[2] and f"[silence {silence.id}]" in lines[2]
        as_json = run_flarebus("tail", "--all", "--rule", "tailed", "-n", "3", "--json", *nats,
                               timeout=30).stdout.splitlines()
        record = json.loads(as_json[2])
        assert record["id"] == quiet.id
        assert record["suppressed"] == {"verdict": "silenced", "reason": silence.id}
        plain = run_flarebus("tail", "--all", "--no-suppressed", "--json", "-n", "3", *nats,
                             timeout=30).stdout.splitlines()
        assert [json.loads(x)["id"] for x in plain] == [loud.id, quiet.id, last.id]
        await (await silences_bucket(js)).delete(silence.id)


class TestFiringAlerts:
    """The source alerts' states: newest in event time wins, whatever the delivery order."""

    async def test_a_late_firing_does_not_undo_a_newer_resolution(self) -> None:
        """Firing at t, resolved at t+10, then the firing delivered again: still resolved."""
        alerts = FiringAlerts()  # not started: memory only, as a gate sees it
        firing = _with(trigger("src", labels={"host": "a"}), severity="critical", at=100.0)
        resolved = _with(firing, id="r", state="resolved", at=110.0)
        await alerts.record(firing)
        assert [a.state for _, a in alerts.firing()] == ["firing"]
        await alerts.record(resolved)
        await alerts.record(firing)
        assert alerts.firing() == []
        await alerts.forget_resolved(now=110.0 + RESOLVED_KEPT + 1)
        assert alerts.alerts == {}  # (no bucket here: nothing to delete there)


class TestFromConfig:
    """`flarebus worker` builds its gate from flarebus.yaml's `inhibit:` and `rate_limits:`."""

    async def test_the_config_sections_reach_the_worker(
            self, private_nats: EmbeddedNats, private_nc: Client, tmp_path: Path) -> None:
        """run_worker with `rate_limits.rules: {cfg-rule: 1/1h}`: the second trigger is
        rate-limited."""
        js = await fresh_stream(private_nc)
        await no_firing_alerts(private_nc)
        path = tmp_path / "flarebus.yaml"
        path.write_text(f"nats: {{servers: ['{private_nats.url}']}}\n"
                        "worker: {consumer: from-config, ack_wait: 2s}\n"
                        "inhibit:\n  - source: {severity: critical}\n"
                        "    target: {severity: warning}\n"
                        "rate_limits:\n  rules: {cfg-rule: 1/1h}\n")
        suppressed = await collect(private_nc, bus.suppressed_subject("cfg-rule"))
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(load_config(path, env={}), stop=stop))
        try:
            await publish(js, [trigger("cfg-rule") for _ in range(2)])
            [record] = await suppressed.wait_for(1, timeout=30)
        finally:
            stop.set()
            worker = await asyncio.wait_for(task, 30)
        assert record.headers[bus.VERDICT_HEADER] == "rate-limited"
        assert len(worker.gate.rules) == 1
