"""The rule file format as msgspec Structs: what the loader decodes and the schema states.

schemas/rule.schema.json is generated from these definitions (``python -m
flarebus.schemas.generate``), so the docstrings and ``Meta`` descriptions below
are what editors show a user writing a rule file: they speak to that user.
Durations and thresholds decode to seconds and Threshold objects on the way
in (custom types, see flarebus.typed). ``Reduce``, ``Missing`` and
``StackSpec`` are also what the compiled rules carry; the other Structs are
compiled into the evaluator's Rule (compiler.py).

What a Struct's fields cannot say (a rule reads one of a metric, a stack or an
expression; a recording rule has an expression and no threshold) is in
``shape_issues``; the generated schema says it with if/then/else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from flarebus.durations import PositiveSeconds, Seconds
from flarebus.engine.language.thresholds import Threshold
from flarebus.events import LABEL_NAME_PATTERN, METRIC_NAME_PATTERN, TOKEN_PATTERN, ActionRef
from flarebus.problems import short
from flarebus.typed import Issue
from flarebus.yamlfile import JsonPath

Name = Annotated[str, Meta(
    pattern=TOKEN_PATTERN, max_length=255,
    description="unique across all loaded files; triggers go to triggers.<name>",
    extra_json_schema={"x-hint": "is not a valid name (letters, digits, _ and - only)"})]
MetricName = Annotated[str, Meta(
    pattern=METRIC_NAME_PATTERN, max_length=255, description="the metric (metrics.<name>)",
    extra_json_schema={"x-hint": "is not a metric name (dot-separated tokens, e.g. cpu.usage)",
                       "examples": ["cpu.usage"]})]
LabelName = Annotated[str, Meta(pattern=LABEL_NAME_PATTERN,
                                extra_json_schema={"x-hint": "is not a label name"})]
Matchers = Annotated[
    dict[LabelName, Annotated[str | None, Meta(extra_json_schema={
        "x-hint": 'is not a label matcher (use a value, "~regex", or null for absent)'})]],
    Meta(description="label matchers: an exact value, a regex after ~, or null for "
                     "'label absent'")]
Severity = Annotated[str, Meta(min_length=1, description="e.g. info, warning, critical")]
ActionItem = Annotated[Annotated[str, Meta(min_length=1)] | ActionRef, Meta(
    description="a plugin name, or {plugin: NAME, config: {...}}",
    extra_json_schema={"examples": ["log", {"plugin": "http",
                                            "config": {"url": "http://127.0.0.1:9000/hook"}}]})]
Actions = list[ActionItem]
When = Annotated[Threshold, Meta(description="the condition, per sample: > >= < <= == != "
                                             "and a number")]

METRIC_WITH_STACK = "cannot be used together with stack: (a rule reads a metric or stack " \
                    "samples, not both)"
REDUCE_WITH_STACK = "is not available for stack rules"
NO_METRIC = "missing required key 'metric' (or 'stack' for a stack rule, 'expr' for an " \
            "expression)"
EXPR_WITH_OTHER = "cannot be used together with expr: (an expression names its metrics " \
                  "itself)"
EXPR_WITH_STACK = "cannot be used together with stack: (a rule reads stack samples or an " \
                  "expression, not both)"
REDUCE_WITH_EXPR = "is not available for expr rules (use avg_over_time(x[5m]) & co. in the " \
                   "expression)"
LABELS_WITH_EXPR = "is not available for expr rules (put matchers in the selector: " \
                   "x{host=\"a\"})"
RECORD_WITHOUT_EXPR = "needs expr: (a recording rule publishes the series an expression gives)"
NOT_FOR_RECORD = "is not available for recording rules (they publish a series; write an " \
                 "alerting rule on it)"
NO_WHEN = "missing required key 'when'"


class StackSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A stack rule's figure: `measure` of the stacks of `source` that hold a `frame`."""

    source: Annotated[str, Meta(
        pattern=TOKEN_PATTERN, max_length=255, description="the stacks.<source> subject tail",
        extra_json_schema={"x-hint": "is not a valid name (letters, digits, _ and - only)"})]
    frame: Annotated[str, Meta(min_length=1,
                               description="a frame name glob (db.query*), or a regex after ~")]
    measure: Annotated[Literal["share", "weight_per_second", "stacks"], Meta(
        description="share: matching weight / all weight; weight_per_second; stacks: "
                    "the number of stacks")] = "share"


class Reduce(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Evaluate `fn` over the samples of the last `over` instead of each sample."""

    fn: Literal["avg", "min", "max", "sum", "count", "rate", "p50", "p90", "p99"]
    over: Annotated[PositiveSeconds, Meta(description="the window")]


class Missing(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What no data means: a series with no sample for `after` is stale, and then `then`."""

    after: Annotated[PositiveSeconds, Meta(
        description="a series with no sample for this long is stale")] = 300.0
    then: Annotated[Literal["resolve", "keep", "fire"], Meta(
        description="resolve: a firing series resolves; keep: the last value holds; "
                    "fire: the absence fires")] = "resolve"


class GroupRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Notify once per group of this rule's alerts: those with equal `by` labels
    (docs/notifications.md). Unset keys come from the worker config's `group:` section.
    """

    by: Annotated[list[LabelName] | UnsetType, Meta(
        description="the labels whose values form a group (default: [], one group per rule)")] = \
        UNSET
    wait: Annotated[Seconds | UnsetType, Meta(
        description="how long a new group waits for more alerts before its first "
                    "notification (default 30s)")] = UNSET
    interval: Annotated[Seconds | UnsetType, Meta(
        description="at most one notification of a changed group this often (default 5m)")] = \
        UNSET
    repeat: Annotated[Seconds | UnsetType, Meta(
        description="re-send an unchanged firing group this often; 0: never (default 4h)")] = \
        UNSET


class StageSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An escalation stage: a stricter threshold with its own for, severity and actions."""

    when: Annotated[Threshold, Meta(description="stricter than the rule's when")]
    for_: Annotated[Seconds | UnsetType, Meta(description="default: the rule's for")] = \
        msgspec.field(name="for", default=UNSET)
    clear: Threshold | UnsetType = UNSET
    severity: Annotated[Severity, Meta(description="default: critical")] = "critical"
    actions: Annotated[Actions | UnsetType, Meta(description="default: the rule's actions")] = \
        UNSET


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule: it watches a metric (or stack samples) per series and fires when `when`
    holds for `for`.
    """

    name: Name
    enabled: Annotated[bool, Meta(description="false: loaded and checked, never "
                                              "evaluated")] = True
    metric: MetricName | UnsetType = UNSET
    stack: StackSpec | UnsetType = UNSET
    expr: Annotated[str, Meta(
        min_length=1, max_length=4096,
        description="instead of metric: an expression (a PromQL subset over flarebus metric "
                    "names, see docs/rules.md), evaluated per output series",
        extra_json_schema={"examples": [
            "sum by (service) (http.errors.rate) / sum by (service) (http.requests.rate)"]})] \
        | UnsetType = UNSET
    record: Annotated[str, Meta(
        pattern=METRIC_NAME_PATTERN, max_length=255,
        description="a recording rule: publish the expr's series as samples on "
                    "metrics.<record> (no when)",
        extra_json_schema={"x-hint": "is not a metric name (dot-separated tokens, e.g. "
                                     "service.error_ratio)"})] | UnsetType = UNSET
    labels: Matchers = {}
    when: When | UnsetType = UNSET
    for_: Annotated[Seconds, Meta(description="how long `when` must hold before the rule "
                                              "fires; 0s fires at once")] = \
        msgspec.field(name="for", default=0.0)
    clear: Annotated[Threshold | UnsetType, Meta(
        description="hysteresis: a firing series resolves when this holds (default: when "
                    "`when` no longer holds)")] = UNSET
    keep_firing_for: Annotated[Seconds, Meta(
        description="after `clear` first holds, keep firing this long")] = 0.0
    reduce: Reduce | UnsetType = UNSET
    missing: Missing = msgspec.field(default_factory=Missing)
    repeat: Annotated[PositiveSeconds | UnsetType, Meta(
        description="re-publish the firing trigger this often while it fires")] = UNSET
    severity: Severity = "warning"
    add_labels: Annotated[dict[LabelName, str], Meta(
        description="labels added to every trigger of the rule (they win over the series' "
                    "labels)")] = {}
    annotations: Annotated[dict[str, str], Meta(
        description="templates rendered into each trigger: {value} {threshold} {duration} "
                    "{labels[host]} ...")] = {}
    actions: Actions = []
    group: Annotated[GroupRule | bool | UnsetType, Meta(
        description="group this rule's alerts into one notification per group; true: with "
                    "the config's defaults; false: never, even when the config groups every "
                    "rule")] = UNSET
    escalate: Annotated[list[StageSpec], Meta(
        description="further stages on the same series, each stricter than the base")] = []


def _refuse(hints: dict[str, str]) -> dict[str, Any]:
    return {"properties": {key: {"not": {}, "x-hint": hint} for key, hint in hints.items()}}


#: Keys a rule may not have beside stack, beside expr, and in a recording rule.
WITH_STACK = {"metric": METRIC_WITH_STACK, "expr": EXPR_WITH_STACK, "reduce": REDUCE_WITH_STACK}
WITH_EXPR = {"metric": EXPR_WITH_OTHER, "reduce": REDUCE_WITH_EXPR, "labels": LABELS_WITH_EXPR}
IN_RECORD = {"when": NOT_FOR_RECORD, "clear": NOT_FOR_RECORD, "escalate": NOT_FOR_RECORD}

#: The rules of the schema no field can state alone (shape_issues is the decoder's side).
ONE_SOURCE: dict[str, Any] = {"allOf": [
    {"if": {"required": ["stack"]}, "then": _refuse(WITH_STACK),
     "else": {"if": {"required": ["expr"]}, "then": _refuse(WITH_EXPR),
              "else": {"required": ["metric"],
                       **_refuse({"record": RECORD_WITHOUT_EXPR})}}},
    {"if": {"required": ["record"]}, "then": _refuse(IN_RECORD),
     "else": {"required": ["when"]}},
]}


class RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    """A list of rules. Each rule watches a metric (or stack samples) per series and fires
    when its threshold holds for a duration. The reference is docs/rules.md.
    """

    rules: Annotated[list[Annotated[RuleSpec, Meta(extra_json_schema=ONE_SOURCE)]],
                     Meta(description="the rules of this file")]


#: The keys a rule may have, as written in files.
RULE_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(RuleSpec))


def shape_issues(item: Mapping[str, Any], path: JsonPath) -> list[Issue]:
    """A rule reads one of a metric, a stack or an expr; only metric rules reduce; a
    recording rule has an expr and no threshold, every other rule a `when`.

    Decided on the keys alone, so it holds (and is reported) even when the
    values are wrong too.
    """
    out = []
    if "stack" in item:
        refused = WITH_STACK
    elif "expr" in item:
        refused = WITH_EXPR
    else:
        refused = {"record": RECORD_WITHOUT_EXPR}
        if "metric" not in item:
            out.append(Issue(path, NO_METRIC))
    if "record" in item:
        refused = {**refused, **IN_RECORD}
    elif "when" not in item:
        out.append(Issue(path, NO_WHEN))
    return out + [Issue((*path, key), f"{short(item[key])} {hint}")
                  for key, hint in refused.items() if key in item]
