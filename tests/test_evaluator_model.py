"""The evaluator against a deliberately simple reference model, and Prometheus' semantics.

The model evaluates Prometheus-style at every integer second (with integer
sample times and durations, continuous evaluation changes state only at whole
seconds, so a 1 s grid is exact): the value of a series is its last sample
until stale, an alert is pending while the condition holds, firing once it held
for `for`, and resolves when `clear` has held for `keep_firing_for`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.replay import replay
from flarebus.engine.language.rulefile import RuleSet, load_rules_text
from flarebus.events import MetricSample


@dataclass
class Case:
    for_: int
    keep: int
    after: int
    clear: int | None  # clear: "< clear"; None: when no longer holds
    samples: list[tuple[int, int]]  # (ts, value), ts non-decreasing

    def ruleset(self) -> RuleSet:
        clear = f", clear: '< {self.clear}'" if self.clear is not None else ""
        return load_rules_text(
            f"rules:\n  - {{name: r, metric: m, when: '> 5', for: {self.for_}s, "
            f"keep_firing_for: {self.keep}s, missing: {{after: {self.after}s}}{clear}}}\n")


def reference(case: Case, end: int) -> dict[int, bool]:
    """Firing or not at each whole second 0..end, evaluated the simple way."""
    firing_at: dict[int, bool] = {}
    state, active_at, cleared_at = "inactive", 0, None
    for t in range(end + 1):
        seen = [(ts, v) for ts, v in case.samples if ts <= t]
        value = seen[-1][1] if seen and t - seen[-1][0] < case.after else None
        if value is None:  # stale: resolve (missing.then: resolve)
            state, cleared_at = "inactive", None
        else:
            holds = value > 5
            cleared = (value < case.clear) if case.clear is not None else not holds
            if state == "firing":
                if cleared:
                    cleared_at = t if cleared_at is None else cleared_at
                    if t - cleared_at >= case.keep:
                        state, cleared_at = "inactive", None
                else:
                    cleared_at = None
            elif holds:
                if state == "inactive":
                    state, active_at = "pending", t
                if t - active_at >= case.for_:
                    state = "firing"
            else:
                state = "inactive"
        firing_at[t] = state == "firing"
    return firing_at


def evaluated(case: Case, end: int) -> dict[int, bool]:
    """The evaluator's firing state at each whole second (after samples and timers at t)."""
    ev = Evaluator(case.ruleset())
    out = {}
    pending = list(case.samples)
    for t in range(end + 1):
        batch = [MetricSample(name="m", value=float(v), ts=float(ts)) for ts, v in pending
                 if ts == t]
        pending = [p for p in pending if p[0] != t]
        ev.ingest(batch, now=float(t))
        ev.advance(float(t))
        out[t] = bool(ev.firing("r"))
    return out


@st.composite
def cases(draw: st.DrawFn) -> Case:
    gaps = draw(st.lists(st.integers(1, 6), min_size=1, max_size=25))  # one sample per instant
    values = draw(st.lists(st.integers(0, 10), min_size=len(gaps), max_size=len(gaps)))
    ts, samples = 0, []
    for gap, value in zip(gaps, values, strict=True):
        ts += gap
        samples.append((ts, value))
    clear = draw(st.one_of(st.none(), st.integers(0, 5)))
    return Case(draw(st.integers(0, 6)), draw(st.integers(0, 4)), draw(st.integers(1, 8)),
                clear, samples)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_evaluator_matches_the_reference_model(case: Case) -> None:
    """Random series and rules: same firing state as the model at every second."""
    end = case.samples[-1][0] + case.after + case.for_ + case.keep + 2
    assert evaluated(case, end) == reference(case, end)


@settings(max_examples=100, deadline=None)
@given(cases())
def test_replay_is_deterministic(case: Case) -> None:
    """Replaying the same input twice yields the same triggers, ids included."""
    def go() -> list[tuple[str, str, float]]:
        samples = [MetricSample(name="m", value=float(v), ts=float(ts)) for ts, v in case.samples]
        return [(t.id, t.state, t.at) for t in replay(Evaluator(case.ruleset()), samples)]
    assert go() == go()


# Prometheus agreement: alerting rule evaluated every 1s (as `promtool test rules` with
# evaluation_interval: 1s), i.e. continuous evaluation on whole-second data. Each case lists
# the seconds at which Prometheus reports the alert firing.

def _firing_seconds(rule: str, samples: list[tuple[int, float, dict[str, str]]], end: int
                    ) -> list[tuple[int, str]]:
    ruleset = load_rules_text("rules:\n  - " + rule + "\n")
    ev = Evaluator(ruleset)
    out = []
    for t in range(end + 1):
        ev.ingest([MetricSample(name="m", value=v, ts=float(ts), labels=lb)
                   for ts, v, lb in samples if ts == t], now=float(t))
        ev.advance(float(t))
        out += [(t, ",".join(f"{k}={v}" for k, v in sorted(x.labels.items())))
                for x in ev.firing("r")]
    return out


def test_prometheus_for() -> None:
    """for: 3s on samples every second: pending at 2, firing from 5 (2 + 3) while > 5."""
    samples = [(t, 9.0 if 2 <= t <= 7 else 1.0, {}) for t in range(10)]
    assert _firing_seconds("{name: r, metric: m, when: '> 5', for: 3s}", samples, 9) == [
        (5, ""), (6, ""), (7, "")]


def test_prometheus_for_zero() -> None:
    """for: 0s fires in the same evaluation the condition first holds."""
    samples = [(0, 1.0, {}), (3, 9.0, {}), (4, 1.0, {})]
    assert _firing_seconds("{name: r, metric: m, when: '> 5', for: 0s}", samples, 5) == [
        (3, "")]


def test_prometheus_gaps_hold_the_last_value_until_stale() -> None:
    """Samples at 0 and 8 only: the value 9 holds in between; for 5s fires at 5."""
    samples = [(0, 9.0, {}), (8, 9.0, {})]
    got = _firing_seconds("{name: r, metric: m, when: '> 5', for: 5s, missing: {after: 10s}}",
                          samples, 20)
    assert got == [(t, "") for t in range(5, 18)]  # stale at 8 + 10 = 18


def test_prometheus_keep_firing_for() -> None:
    """keep_firing_for 3s: condition false from 4, alert still firing at 4, 5, 6; gone at 7."""
    samples = [(t, 9.0 if t < 4 else 1.0, {}) for t in range(10)]
    assert _firing_seconds("{name: r, metric: m, when: '> 5', keep_firing_for: 3s}", samples,
                           9) == [(t, "") for t in range(0, 7)]


def test_prometheus_for_not_a_multiple_of_the_sample_interval() -> None:
    """Samples every 10s, for 25s: with 1s evaluation Prometheus fires at 25, not 30."""
    samples = [(t, 9.0, {}) for t in range(0, 60, 10)]
    got = _firing_seconds("{name: r, metric: m, when: '> 5', for: 25s}", samples, 30)
    assert got[0] == (25, "")


def test_prometheus_several_series_at_the_same_instant() -> None:
    """Two series crossing at the same instant both fire at the same evaluation."""
    samples = [(t, 9.0 if t >= 3 else 1.0, {"host": h}) for t in range(8) for h in ("a", "b")]
    got = _firing_seconds("{name: r, metric: m, when: '> 5', for: 2s}", samples, 6)
    assert got[:2] == [(5, "host=a"), (5, "host=b")]
