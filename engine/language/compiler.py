"""Compiling a decoded rule (a RuleSpec) into the Rule the evaluator runs.

``check`` is what neither a type nor a schema can say: clear disjoint from
when, each escalation stage stricter than the base, regexes that compile,
templates that render. ``compile_rule`` assumes the spec passed it, so it has
no error path of its own: an exception there is a bug, and it surfaces as one
instead of silently dropping a valid rule.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from flarebus.engine.language.expr.check import Program, compile_expr
from flarebus.engine.language.matchers import Matcher, parse_matcher
from flarebus.engine.language.ruleformat import (
    Actions,
    GroupRule,
    Missing,
    Reduce,
    RuleSpec,
    StackSpec,
)
from flarebus.engine.language.templates import check_template
from flarebus.engine.language.thresholds import Threshold, overlap, stricter
from flarebus.events import ActionRef, GroupSpec
from flarebus.typed import Issue
from flarebus.yamlfile import JsonPath

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stage:
    """An escalation stage: a stricter threshold with its own ``for``, severity and actions."""

    when: Threshold
    for_: float
    clear: Threshold | None
    severity: str
    actions: tuple[ActionRef, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule. ``fingerprint`` changes whenever the definition does."""

    name: str
    fingerprint: str
    metric: str | None
    when: Threshold | None  # None: a recording rule
    stack: StackSpec | None = None
    expr: Program | None = None
    record: str | None = None
    matchers: tuple[Matcher, ...] = ()
    for_: float = 0.0
    clear: Threshold | None = None
    keep_firing_for: float = 0.0
    reduce: Reduce | None = None
    missing: Missing = field(default_factory=Missing)
    repeat: float | None = None
    severity: str = "warning"
    add_labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    actions: tuple[ActionRef, ...] = ()
    group: GroupSpec | None = None
    escalate: tuple[Stage, ...] = ()
    enabled: bool = True
    file: str = "<memory>"
    line: int = 1

    @property
    def source(self) -> str:
        """Where the rule is defined: ``file:line``."""
        return f"{self.file}:{self.line}"

    @property
    def partition(self) -> str | None:
        """The shard key of a rule that must see all its input series on one engine.

        An expr rule whose output series can depend on several input series
        (aggregation, vector matching, absent, histogram_quantile) is evaluated
        by the one engine whose ``owns`` accepts this key, and that engine needs
        every sample of the metrics in ``expr.inputs``. Other rules (None) are
        sharded by series key like plain rules.
        """
        if self.expr is None or not self.expr.cross_series:
            return None
        return f"rule:{self.name}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of a set of files, in file order; immutable (a reload builds a new one)."""

    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()

    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def fingerprint(definition: Any) -> str:
    """A stable hash of a rule's definition as written: equal means an unchanged rule.

    Taken over the YAML data, not the decoded Struct, so a checkpoint written by
    an older flarebus still matches the rule it was taken for.
    """
    data = msgspec.json.encode(definition, order="sorted")
    return hashlib.blake2b(data, digest_size=10).hexdigest()


def check(spec: RuleSpec, base: JsonPath) -> list[Issue]:
    """What is wrong with a well-typed rule at ``base``: the checks past the types."""
    out: list[Issue] = []
    if spec.clear is not UNSET and spec.when is not UNSET:
        out += _disjoint((*base, "clear"), spec.when, spec.clear)
    for label, value in spec.labels.items():
        if value is not None and value.startswith("~"):
            out += _compiles((*base, "labels", label), value[1:])
    if spec.stack is not UNSET and spec.stack.frame.startswith("~"):
        out += _compiles((*base, "stack", "frame"), spec.stack.frame[1:])
    for key, template in spec.annotations.items():
        if error := check_template(template):
            out.append(Issue((*base, "annotations", key), error))
    for i, stage in enumerate(spec.escalate):
        path = (*base, "escalate", i)
        if spec.when is not UNSET and not stricter(stage.when, spec.when):
            out.append(Issue((*path, "when"), (
                f"{_q(stage.when.source)} is not stricter than when {_q(spec.when.source)} "
                f"(every value it passes must pass the base, and fewer of them: "
                f"e.g. \"> 95\" for \"> 80\")")))
        if stage.clear is not UNSET:
            out += _disjoint((*path, "clear"), stage.when, stage.clear)
    return out


def compile_rule(spec: RuleSpec, *, fingerprint: str, file: str, line: int) -> Rule:
    """The evaluator's Rule for a spec that passed ``check``; defaults filled in.

    Durations become plain floats: decoded, they are a float subclass that
    msgspec could not encode again.
    """
    actions = _actions(spec.actions)
    stages = tuple(Stage(
        when=s.when, for_=float(spec.for_ if s.for_ is UNSET else s.for_),
        clear=_given(s.clear), severity=s.severity,
        actions=actions if s.actions is UNSET else _actions(s.actions))
        for s in spec.escalate)
    reduce = None if spec.reduce is UNSET else Reduce(spec.reduce.fn, float(spec.reduce.over))
    repeat = None if spec.repeat is UNSET else float(spec.repeat)
    return Rule(
        name=spec.name, fingerprint=fingerprint, metric=_given(spec.metric),
        when=_given(spec.when), stack=_given(spec.stack),
        expr=None if spec.expr is UNSET else compile_expr(spec.expr), record=_given(spec.record),
        matchers=tuple(parse_matcher(label, value) for label, value in spec.labels.items()),
        for_=float(spec.for_), clear=_given(spec.clear),
        keep_firing_for=float(spec.keep_firing_for), reduce=reduce,
        missing=Missing(float(spec.missing.after), spec.missing.then), repeat=repeat,
        severity=spec.severity, add_labels=dict(spec.add_labels),
        annotations=dict(spec.annotations), actions=actions, group=_group(spec.group),
        escalate=stages,
        enabled=spec.enabled, file=file, line=line)


def _given(value: T | UnsetType) -> T | None:
    return None if value is UNSET else value


def _group(group: GroupRule | bool | UnsetType) -> GroupSpec | None:
    """The wire form of ``group:``: what the rule leaves unset stays None (worker defaults)."""
    if group is UNSET:
        return None
    if isinstance(group, bool):
        return GroupSpec(enabled=group)
    return GroupSpec(
        by=None if group.by is UNSET else list(group.by),
        wait=None if group.wait is UNSET else float(group.wait),
        interval=None if group.interval is UNSET else float(group.interval),
        repeat=None if group.repeat is UNSET else float(group.repeat))


def _actions(items: Actions) -> tuple[ActionRef, ...]:
    return tuple(ActionRef(plugin=item) if isinstance(item, str) else item for item in items)


def _disjoint(path: JsonPath, when: Threshold, clear: Threshold) -> list[Issue]:
    both = overlap(when, clear)
    if both is None:
        return []
    return [Issue(path, f"{_q(clear.source)} overlaps when {_q(when.source)} (both hold for "
                        f"{both:g}); clear must only hold where when does not, e.g. \"< 70\" "
                        f"for \"> 80\"")]


def _compiles(path: JsonPath, pattern: str) -> list[Issue]:
    try:
        re.compile(pattern)
    except re.error as exc:
        return [Issue(path, f"regex {_q(pattern)} does not compile: {exc}")]
    return []


def _q(text: str) -> str:
    """Quote a value the way the other messages do (JSON style), never cut short."""
    return json.dumps(text, ensure_ascii=False)
