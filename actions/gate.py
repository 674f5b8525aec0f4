"""The gate: what the worker asks before it runs a trigger's actions.

For each delivery the verdict is one of

- **silenced**: an active silence (``flarebus silence add``) matches the
  trigger's labels plus ``rule`` and ``severity``; no action runs;
- **inhibited**: an ``inhibit:`` rule's target matches it while an alert
  matching the rule's source fires with the same ``equal`` labels; no action runs;
- **run**, possibly with some actions **rate-limited** (actions/ratelimit.py):
  those do not run, the others do.

Anything not run is recorded on ``triggers.suppressed.<rule>`` (stream
FLAREBUS_TRIGGERS, which workers do not consume): the trigger as it came, with
headers ``Flarebus-Verdict`` (silenced, inhibited, rate-limited) and
``Flarebus-Reason`` (the silence id, the inhibiting alert, the limited actions
and their rates). ``flarebus tail`` shows them. The engine's repeats of a
silenced series keep being published and are recorded as silenced; once the
silence expires the next repeat runs its actions again, as with Alertmanager.
The trigger itself is then acked: a silenced trigger is done, not retried.

Silences and firing alerts come from KV watches, so the check is a lookup in
memory; only a source alert's state change writes to the bus.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from flarebus import bus
from flarebus.actions.firing import AlertState, FiringAlerts, alert_key
from flarebus.actions.gatestatus import Reporter
from flarebus.actions.ratelimit import RateLimiter
from flarebus.config import JetStreamSettings
from flarebus.events import ActionRef, Trigger
from flarebus.gate_config import InhibitRule, RateLimits
from flarebus.labelmatch import LabelsCheck, alert_labels, compile_all
from flarebus.silences import SilenceWatch, silences_bucket
from flarebus.telemetry import meter

_suppressed = meter.create_counter(
    "flarebus.actions.suppressed", description="triggers or actions not run: silenced, "
    "inhibited or rate-limited (attribute verdict)")

VerdictKind = Literal["run", "silenced", "inhibited"]


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one trigger: whether to run, and which actions not to."""

    kind: VerdictKind = "run"
    reason: str = ""
    #: indexes (into the trigger's actions) that are rate-limited this time
    limited: frozenset[int] = frozenset()
    refs: Sequence[ActionRef] = ()

    @property
    def runs(self) -> bool:
        """Some action is to run."""
        return self.kind == "run" and len(self.limited) < len(self.refs)


@dataclass(frozen=True)
class _Inhibit:
    """An inhibit rule with its matchers compiled (checked for every trigger)."""

    source: LabelsCheck
    target: LabelsCheck
    equal: list[str]


@dataclass
class Gate:
    """Silences, inhibition and rate limits for one worker (``start`` before ``check``)."""

    inhibit: Sequence[InhibitRule] = ()
    rate_limits: RateLimits = field(default_factory=RateLimits)

    def __post_init__(self) -> None:
        self.rules = [_Inhibit(compile_all(r.sources()), compile_all(r.targets()),
                               list(r.equal)) for r in self.inhibit]
        self.limiter = RateLimiter(self.rate_limits)
        self.firing = FiringAlerts()
        self.silences: SilenceWatch | None = None
        self.js: JetStreamContext | None = None
        self.nc: Client | None = None
        self.reconnects = 0  # the connection's count when the watches (re)started
        self.reporter: Reporter | None = None  # the summary `flarebus status` shows
        #: verdict -> triggers (silenced, inhibited) or actions (rate-limited) not run
        self.counts: Counter[str] = Counter()

    async def start(self, nc: Client, jetstream: JetStreamSettings | None = None) -> None:
        self.nc = nc
        self.reconnects = nc.stats.get("reconnects", 0)
        self.js = js = nc.jetstream()
        self.silences = SilenceWatch(await silences_bucket(js, jetstream))
        await self.silences.start()
        if self.rules:
            await self.firing.start(js, jetstream)
        self.reporter = Reporter(self.counts, self.limiter.dropped, self.silences.silences,
                                 self.housekeeping)
        await self.reporter.start(js, jetstream)

    async def housekeeping(self) -> None:
        """Watch again after a reconnect; delete silences and resolutions past retention."""
        reconnects = self.nc.stats.get("reconnects", 0) if self.nc is not None else 0
        if reconnects != self.reconnects:
            self.reconnects = reconnects
            if self.silences is not None:
                await self.silences.watch.restart()
            if self.firing.watch is not None:
                await self.firing.watch.restart()
        if self.silences is not None:
            await self.silences.forget_expired()
        await self.firing.forget_resolved()

    async def close(self) -> None:
        if self.reporter is not None:
            await self.reporter.close()
        if self.silences is not None:
            await self.silences.close()
        await self.firing.close()

    async def check(self, msg: Msg, trigger: Trigger, refs: Sequence[ActionRef], *,
                    limit: bool = True) -> Verdict:
        """The verdict for one delivery of ``trigger``; what is not run is recorded.

        ``limit=False``: silences and inhibition only (a grouped rule's trigger: its
        group's notifications are paced by the group's interval instead).
        """
        verdict = await self.judge(trigger, refs, first_try=msg.metadata.num_delivered <= 1,
                                   limit=limit)
        if verdict.kind != "run" or verdict.limited:
            await self.record(msg, trigger, verdict)
        return verdict

    async def judge(self, trigger: Trigger, refs: Sequence[ActionRef], *,
                    first_try: bool = True, now: float | None = None,
                    limit: bool = True) -> Verdict:
        now = time.time() if now is None else now
        labels = alert_labels(trigger)
        if self.rules and any(r.source(labels) for r in self.rules):
            await self.firing.record(trigger)  # silenced or not: a source inhibits either way
        if self.silences is not None and (s := self.silences.muting(labels, now)) is not None:
            return Verdict("silenced", s.id, refs=refs)
        if self.rules and (source := self.inhibited_by(trigger, labels)) is not None:
            return Verdict("inhibited", _describe(source), refs=refs)
        if not first_try or not limit:  # a retry was judged at its first delivery
            return Verdict(refs=refs)
        allow = self.limiter.allow
        limited = frozenset(i for i, ref in enumerate(refs) if not allow(trigger.rule, ref))
        if not limited:
            return Verdict(refs=refs)
        return Verdict(limited=limited, refs=refs, reason=", ".join(
            self._rate_text(trigger.rule, refs[i]) for i in sorted(limited)))

    def inhibited_by(self, trigger: Trigger, labels: dict[str, str]) -> AlertState | None:
        """The firing alert that inhibits ``trigger``, or None."""
        own: str | None = None
        firing: list[tuple[str, AlertState]] = []
        for rule in self.rules:
            if not rule.target(labels):
                continue
            if own is None:  # only for a target: hashing costs more than the rest
                own, firing = alert_key(trigger), self.firing.firing()
            for key, alert in firing:
                if key != own and rule.source(alert.labels) and all(
                        alert.labels.get(name, "") == labels.get(name, "")
                        for name in rule.equal):
                    return alert
        return None

    def _rate_text(self, rule: str, ref: ActionRef) -> str:
        """``slack (60/60s)``: the action and the limit it hit."""
        rate = self.rate_limits.rate_for(rule, ref.plugin, ref.rate_limit)
        limit = f"{rate.runs}/{rate.period:g}s" if rate is not None else "none"
        return f"{ref.plugin} ({limit})"

    async def record(self, msg: Msg, trigger: Trigger, verdict: Verdict) -> None:
        """Publish the trigger on ``triggers.suppressed.<rule>`` with the verdict; count it."""
        kind = verdict.kind if verdict.kind != "run" else "rate-limited"
        count = len(verdict.limited) if verdict.kind == "run" else 1
        self.counts[kind] += count
        _suppressed.add(count, {"rule": trigger.rule, "verdict": kind})
        if self.js is None:
            return
        await self.js.publish(bus.suppressed_subject(trigger.rule), msg.data, headers={
            bus.VERDICT_HEADER: kind, bus.REASON_HEADER: verdict.reason,
            bus.MSG_ID_HEADER: f"{trigger.id}:suppressed:{msg.metadata.num_delivered}"})


def _describe(alert: AlertState) -> str:
    shown = {k: v for k, v in alert.labels.items() if k not in ("rule", "alertname")}
    inner = ",".join(f"{k}={v}" for k, v in sorted(shown.items()))
    return f"{alert.rule}{{{inner}}}"

