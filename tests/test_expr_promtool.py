"""expr rules agree with Prometheus itself: generated scenarios run through `promtool test
rules` (1 s evaluation interval, integer-second samples) and `flarebus replay` fire and
resolve at the same seconds.

promtool 2.x selects closed windows ``[t - 5s, t]`` and a closed 5-minute lookback;
flarebus (as Prometheus 3) uses left-open ones. On integer-second samples the two agree
when the Prometheus side reads ``[4999ms]`` for ``[5s]`` and the flarebus side has
``missing.after: 301s``: both then hold the same samples at every second.

Range functions whose value moves with the evaluation time itself (rate's extrapolation,
predict_linear's intercept) are evaluated by flarebus at the series' own samples only
(docs/rules.md), so their scenarios sample every series every second to the end.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from flarebus.engine.language.expr.check import compile_expr
from flarebus.engine.language.expr.lexer import ExprError
from tests.support import run_flarebus, system_binary

SECONDS = 24  # samples at 0 .. SECONDS - 1
END = SECONDS + 305  # past every staleness
#: The seconds compared: while samples come and windows empty, then while series go stale
#: (a series' last sample at s < SECONDS is stale from s + 301 on); nothing changes between.
CHECKED = [*range(SECONDS + 6), *range(298, END + 1)]
HOSTS = ("h1", "h2")
SERVICES = ("x", "y")
BUCKETS = ("1", "2.5", "5", "+Inf")

Names = Callable[[str], str]
Ranges = Callable[[int], str]


@dataclass
class Scenario:
    index: int
    flarebus_expr: str
    prometheus_expr: str
    op: str
    threshold: float
    for_: int
    series: list[tuple[str, dict[str, str], list[float | None]]]  # metric, labels, per second


class Gen:
    """A random expression, written once for flarebus and once for Prometheus."""

    def __init__(self, rng: random.Random, continuous: bool) -> None:
        self.rng = rng
        self.continuous = continuous

    def selector(self, metric: str | None = None) -> Callable[[Names], str]:
        m = metric or self.rng.choice(["a", "c"])
        matcher = self.rng.choice(["", '{host="h1"}', '{svc!="x"}', '{host=~"h.*"}'])
        return lambda name: f"{name(m)}{matcher}"

    def leaf(self) -> Callable[[Names, Ranges], str]:
        sel = self.selector()
        kind = self.rng.random()
        if kind < 0.4:
            return lambda name, rng: sel(name)
        fns = ["avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
               "count_over_time", "deriv"] + (["rate", "predict_linear"] if self.continuous
                                              else [])
        fn = self.rng.choice(fns)
        seconds = self.rng.choice([3, 5])
        if kind < 0.9:
            if fn == "predict_linear":
                return lambda name, rng: f"predict_linear({sel(name)}[{rng(seconds)}], 10)"
            return lambda name, rng: f"{fn}({sel(name)}[{rng(seconds)}])"
        missing = self.rng.choice(['{host="h9"}', ""])
        m = self.rng.choice(["a", "c"])
        return lambda name, rng: f"absent({name(m)}{missing})"

    def expr(self, depth: int) -> Callable[[Names, Ranges], str]:
        if depth == 0 or self.rng.random() < 0.3:
            return self.leaf()
        kind = self.rng.random()
        sub = self.expr(depth - 1)
        if kind < 0.4:
            op = self.rng.choice(["sum", "avg", "min", "max", "count"])
            labels = ", ".join(self.rng.sample(["host", "svc"], self.rng.randint(0, 2)))
            grouping = self.rng.choice(["by", "without"])
            return lambda name, rng: f"{op} {grouping} ({labels}) ({sub(name, rng)})"
        if kind < 0.7:
            other = self.expr(depth - 1)
            op = self.rng.choice(["+", "-", "*", "/"])
            # (ignoring(svc) would make duplicates on a side, which Prometheus fails on)
            mod = self.rng.choice(["", "", "on(host, svc)", "ignoring(zone)"])
            return lambda name, rng: f"({sub(name, rng)}) {op} {mod} ({other(name, rng)})"
        c = self.rng.choice([2, 0.5, -1])
        op = self.rng.choice(["+", "*", "/"])
        return lambda name, rng: f"({sub(name, rng)}) {op} {c}"


def histogram(index: int, rng: random.Random) -> Scenario:
    """histogram_quantile over the rate of cumulative buckets, per service."""
    phi = rng.choice([0.5, 0.9, 0.99])
    series = []
    for svc in SERVICES:
        totals = [0.0] * len(BUCKETS)
        per_bucket: list[list[float | None]] = [[] for _ in BUCKETS]
        for _ in range(SECONDS):
            grow = rng.randint(0, 4)
            for i in range(len(BUCKETS)):
                totals[i] += grow if i >= rng.randint(0, len(BUCKETS) - 1) else 0
                totals[i] = max(totals[i], totals[i - 1] if i else 0)
                per_bucket[i].append(totals[i])
        series += [("b", {"svc": svc, "le": le}, per_bucket[i]) for i, le in enumerate(BUCKETS)]
    text = "histogram_quantile({phi}, sum by (le, svc) (rate({b}[{r}])))"
    return Scenario(index, text.format(phi=phi, b=f"s{index}.b", r="5s"),
                    text.format(phi=phi, b=f"s{index}_b", r="4999ms"),
                    rng.choice([">", "<"]), rng.choice([1.5, 2.5, 4.0]), rng.randint(0, 3),
                    series)


def scenario(index: int, rng: random.Random) -> Scenario:
    if index % 8 == 7:
        return histogram(index, rng)
    continuous = index % 2 == 0
    gen = Gen(rng, continuous)
    while True:  # an expression the checker refuses (an on() label that never matches): again
        make = gen.expr(2)
        fl = make(lambda m: f"s{index}.{m}", lambda s: f"{s}s")
        try:
            compile_expr(fl)
            break
        except ExprError:
            continue
    pr = make(lambda m: f"s{index}_{m}", lambda s: f"{s * 1000 - 1}ms")
    series = []
    for m in ("a", "c"):
        for host in HOSTS:
            for svc in SERVICES:
                if rng.random() < 0.2:
                    continue  # this series never exists
                start = 0 if continuous else rng.randint(0, 8)
                stop = SECONDS if continuous else rng.randint(start + 1, SECONDS)
                value = float(rng.randint(0, 10))
                values: list[float | None] = []
                for t in range(SECONDS):
                    value = max(0.0, value + rng.choice([-2, -1, 0, 1, 2, 3]))
                    gap = not continuous and rng.random() < 0.15
                    values.append(value if start <= t < stop and not gap else None)
                series.append((m, {"host": host, "svc": svc}, values))
    return Scenario(index, fl, pr, rng.choice([">", "<"]),
                    rng.choice([-0.5, 0.5, 1.5, 3.5, 5.5, 8.5]), rng.randint(0, 3), series)


def flarebus_firing(scenarios: list[Scenario], tmp: Path) -> dict[tuple[int, int], list[dict]]:
    """(scenario, second) -> the label sets `flarebus replay` has firing then."""
    rules = {"rules": [{"name": f"r{s.index}", "expr": s.flarebus_expr,
                        "when": f"{s.op} {s.threshold}", "for": f"{s.for_}s",
                        "missing": {"after": "301s"}} for s in scenarios]}
    (tmp / "rules.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    lines = []
    for t in range(SECONDS):
        for s in scenarios:
            for metric, labels, values in s.series:
                if values[t] is not None:
                    lines.append(json.dumps({"name": f"s{s.index}.{metric}", "value": values[t],
                                             "ts": float(t), "labels": labels}))
    (tmp / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run_flarebus("replay", "--rules", str(tmp / "rules.yaml"), "--until", str(END),
                        str(tmp / "samples.jsonl"), timeout=300)
    assert done.returncode == 0, done.stderr
    changes: dict[tuple[str, str], list[tuple[float, str, dict]]] = {}
    for line in done.stdout.splitlines():
        trigger = json.loads(line)
        key = (trigger["rule"], json.dumps(trigger["labels"], sort_keys=True))
        changes.setdefault(key, []).append((trigger["at"], trigger["state"], trigger["labels"]))
    out: dict[tuple[int, int], list[dict]] = {}
    for (rule, _), events in changes.items():
        index = int(rule[1:])
        for t in CHECKED:
            state = None
            for at, what, labels in events:
                if at <= t:
                    state = (what, labels)
            if state is not None and state[0] == "firing":
                out.setdefault((index, t), []).append(state[1])
    return out


def promtool_file(scenarios: list[Scenario], firing: dict[tuple[int, int], list[dict]],
                  tmp: Path) -> Path:
    groups = [{"name": f"g{s.index}", "interval": "1s", "rules": [{
        "alert": f"r{s.index}", "expr": f"({s.prometheus_expr}) {s.op} {s.threshold}",
        "for": f"{s.for_}s"}]} for s in scenarios]
    (tmp / "prom-rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    input_series, checks = [], []  # one test: each would evaluate every group again
    for s in scenarios:
        for metric, labels, values in s.series:
            if any(v is not None for v in values):
                inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
                input_series.append({"series": f"s{s.index}_{metric}{{{inner}}}",
                                     "values": " ".join("_" if v is None else repr(v)
                                                        for v in values)})
        checks += [{"eval_time": f"{t}s", "alertname": f"r{s.index}",
                    "exp_alerts": [{"exp_labels": labels}
                                   for labels in firing.get((s.index, t), [])]}
                   for t in CHECKED]
    tests = [{"interval": "1s", "input_series": input_series, "alert_rule_test": checks}]
    path = tmp / "prom-test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": ["prom-rules.yaml"],
                                    "evaluation_interval": "1s", "tests": tests}),
                    encoding="utf-8")
    return path


def test_replay_fires_and_resolves_when_prometheus_does(tmp_path: Path) -> None:
    """40 generated scenarios: promtool confirms every second of `flarebus replay`'s alerts."""
    promtool = system_binary("promtool")
    rng = random.Random(14)
    scenarios = [scenario(i, rng) for i in range(40)]
    firing = flarebus_firing(scenarios, tmp_path)
    fired = {index for index, _ in firing}
    assert len(fired) >= 10, "too few scenarios ever fire to show agreement"
    path = promtool_file(scenarios, firing, tmp_path)
    done = subprocess.run([promtool, "test", "rules", path.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
