"""Rule unit tests, in the spirit of ``promtool test rules``.

A test file names rule files (relative to itself), input series in promtool's
compact notation, and the alerts expected to be firing at given times::

    rule_files: [../examples/basic.yaml]
    tests:
      - name: cpu fires after 30s
        interval: 10s                 # time between two values of a series
        input_series:
          - series: 'cpu.usage{host="web-1"}'
            values: '50 90x4 _ 40'     # 50, then 90 five times, a gap, 40
        alert_rule_test:
          - eval_time: 40s
            alertname: high-cpu
            exp_alerts:
              - exp_labels: {host: web-1}
                exp_annotations: {summary: "..."}

Notation: ``a+bxn`` is a, a+b, ... (n+1 values), ``axn`` repeats a n+1 times,
``_`` is a missing sample and ``_xn`` n of them, ``stale`` a staleness marker (the
series ended there). Times are offsets from 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from flarebus.durations import parse_duration
from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.rulefile import RuleSet, load_rules
from flarebus.errors import InvalidFileError, Problem
from flarebus.events import MetricSample, stale_marker
from flarebus.yamlfile import YamlDocument, load_yaml

_SERIES = re.compile(r'^\s*([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\s*(?:\{(.*)\})?\s*$')
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_NUM = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_TERM = re.compile(rf"^(_|{_NUM})(?:([-+](?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?x([0-9]+))?$")


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    """``cpu.usage{host="web-1"}`` -> ("cpu.usage", {"host": "web-1"})."""
    match = _SERIES.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a series (use name{{label=\"value\"}})")
    name, inner = match.groups()
    labels: dict[str, str] = {}
    rest = (inner or "").strip()
    while rest:
        m = _LABEL.match(rest)
        if not m:
            raise ValueError(f"{text!r}: bad labels at {rest!r} (use label=\"value\")")
        labels[m.group(1)] = m.group(2).encode().decode("unicode_escape")
        rest = rest[m.end():].strip()
    return name, labels


#: A staleness marker in a series' values (promtool's ``stale``): the series ended there.
STALE: Final = "stale"


def expand_values(text: str) -> list[float | str | None]:
    """``'1+1x3 _ 5x1 stale'`` -> [1, 2, 3, 4, None, 5, 5, STALE]."""
    out: list[float | str | None] = []
    for term in str(text).split():
        if term == STALE:
            out.append(STALE)
            continue
        m = _TERM.match(term)
        if not m:
            raise ValueError(f"{term!r} is not a value (use 1, 1+1x10, 5x3, _, _x3 or stale)")
        start, step, count = m.groups()
        if start == "_":
            if step:
                raise ValueError(f"{term!r}: a missing value has no step")
            out.extend([None] * (int(count) if count else 1))
            continue
        value = float(start)
        if count is None:
            out.append(value)
            continue
        delta = float(step) if step else 0.0
        out.extend(value + delta * i for i in range(int(count) + 1))
    return out


@dataclass
class Failure:
    """One expectation that did not hold: what was expected, what the evaluator did."""

    where: str
    test: str
    message: str
    expected: list[dict[str, Any]] = field(default_factory=list)
    got: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"FAIL {self.where}: test {self.test!r}: {self.message}"]
        lines.append(f"  expected: {_show(self.expected)}")
        lines.append(f"  got:      {_show(self.got)}")
        return "\n".join(lines)


def _show(alerts: list[dict[str, Any]]) -> str:
    if not alerts:
        return "(no alerts)"
    return "\n            ".join(str(a) for a in alerts)


@dataclass
class Result:
    file: str
    tests: int = 0
    failures: list[Failure] = field(default_factory=list)


def _check_shape(doc: YamlDocument) -> list[Problem]:
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        return [doc.problem((), "a rule test file needs `tests:` (a list) and `rule_files:`")]
    problems = []
    if not isinstance(data.get("rule_files"), list) or not data["rule_files"]:
        problems.append(doc.problem(("rule_files",), "rule_files: list the rule files to test"))
    allowed = {"rule_files", "tests", "evaluation_interval"}
    for key in data:
        if key not in allowed:
            problems.append(doc.problem((key,), f"{key}: unknown key; allowed: "
                                        + ", ".join(sorted(allowed)), key=True))
    for i, test in enumerate(data["tests"]):
        if not isinstance(test, dict):
            problems.append(doc.problem(("tests", i), "a test is a mapping"))
            continue
        known = {"name", "interval", "input_series", "alert_rule_test"}
        for key in test:
            if key not in known:
                problems.append(doc.problem(("tests", i, key), f"{key}: unknown key; allowed: "
                                            + ", ".join(sorted(known)), key=True))
    return problems


def load_test_file(path: str | Path) -> tuple[YamlDocument, RuleSet]:
    """Parse a test file and load the rules it names; InvalidFileError with every problem."""
    doc = load_yaml(path)
    problems = _check_shape(doc)
    if problems:
        raise InvalidFileError(problems)
    base = Path(path).parent
    rule_paths = [base / p for p in doc.data["rule_files"]]
    missing = [p for p in rule_paths if not p.exists()]
    if missing:
        raise InvalidFileError([doc.problem(("rule_files", doc.data["rule_files"].index(
            str(p.relative_to(base)))), f"rule file {str(p)!r} does not exist")
            for p in missing])
    return doc, load_rules(rule_paths)


def _samples(doc: YamlDocument, t: int, test: dict[str, Any], step: float
             ) -> Iterator[MetricSample]:
    series = []
    for j, item in enumerate(test.get("input_series") or []):
        try:
            name, labels = parse_series(item["series"])
            values = expand_values(item["values"])
        except (KeyError, TypeError) as exc:
            raise InvalidFileError([doc.problem(("tests", t, "input_series", j),
                                                f"input series needs series: and values: ({exc})")
                                    ]) from None
        except ValueError as exc:
            raise InvalidFileError([doc.problem(("tests", t, "input_series", j), str(exc))]) \
                from None
        series.append((name, labels, values))
    longest = max((len(v) for _, _, v in series), default=0)
    for i in range(longest):  # every series' sample at an instant, then the next instant
        for name, labels, values in series:
            value = values[i] if i < len(values) else None
            if value == STALE:
                yield stale_marker(name, i * step, labels)
            elif isinstance(value, float):
                yield MetricSample(name=name, value=value, ts=i * step, labels=labels)


def _firing(evaluator: Evaluator, rule: str) -> list[dict[str, Any]]:
    out = [{"labels": t.labels, "annotations": t.annotations} for t in evaluator.firing(rule)]
    return sorted(out, key=lambda a: sorted(a["labels"].items()))


def run_test_file(path: str | Path) -> Result:
    """Run every test of one file."""
    doc, rules = load_test_file(path)
    result = Result(doc.file)
    default_step = parse_duration(doc.data.get("evaluation_interval", "1s"))
    for t, test in enumerate(doc.data["tests"]):
        name = str(test.get("name", f"#{t + 1}"))
        step = parse_duration(test.get("interval", default_step))
        evaluator = Evaluator(rules)
        checks = []
        for k, check in enumerate(test.get("alert_rule_test") or []):
            try:
                at = parse_duration(check["eval_time"])
                alertname = check["alertname"]
            except (KeyError, ValueError) as exc:
                raise InvalidFileError([doc.problem(("tests", t, "alert_rule_test", k),
                                                    f"needs eval_time (a duration) and "
                                                    f"alertname: {exc}")]) from None
            if rules.get(alertname) is None:
                raise InvalidFileError([doc.problem(("tests", t, "alert_rule_test", k,
                                                     "alertname"),
                                                    f"no rule named {alertname!r} in rule_files")])
            checks.append((at, k, check))
        checks.sort(key=lambda c: (c[0], c[1]))
        samples = iter(_samples(doc, t, test, step))
        pending = next(samples, None)
        for at, k, check in checks:
            while pending is not None and pending.ts is not None and pending.ts <= at:
                evaluator.ingest((pending,), now=pending.ts)
                pending = next(samples, None)
            evaluator.advance(at)
            result.tests += 1
            got = _firing(evaluator, check["alertname"])
            expected = [{"labels": dict(a.get("exp_labels") or {}),
                         "annotations": dict(a.get("exp_annotations") or {})}
                        for a in check.get("exp_alerts") or []]
            if not _same(expected, got):
                line = doc.position(("tests", t, "alert_rule_test", k))[0]
                result.failures.append(Failure(
                    f"{doc.file}:{line}", name,
                    f"alertname {check['alertname']!r} at eval_time {check['eval_time']}",
                    expected, got))
    return result


def _same(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> bool:
    """Same alerts; an alert that expects no annotations does not check them."""
    if len(expected) != len(got):
        return False
    remaining = list(got)
    for exp in expected:
        match = next((g for g in remaining if g["labels"] == exp["labels"] and (
            not exp["annotations"] or g["annotations"] == exp["annotations"])), None)
        if match is None:
            return False
        remaining.remove(match)
    return True
