"""The config sections of the worker's gate: ``inhibit:`` rules and ``rate_limits:``.

Kept out of flarebus/config.py so that file only names the sections. Both are
read by workers only (actions/gate.py); the engine ignores them.

A rate is ``N/DURATION`` (``20/1m``: at most 20 runs a minute, in bursts of up
to 20) or ``none`` (no limit). The same text is what a rule file's action entry
may carry as ``rate_limit`` (``actions: [{plugin: slack, rate_limit: 5/1m}]``).
"""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple

import msgspec
from msgspec import Meta

from flarebus.durations import RATE_HINT, RATE_PATTERN, parse_duration
from flarebus.events import LABEL_NAME_PATTERN
from flarebus.labelmatch import LabelMatcher, parse_matcher

Rate = Annotated[str, Meta(pattern=RATE_PATTERN, extra_json_schema={"x-hint": RATE_HINT})]
#: Without any setting: 600 runs a minute per (rule, action) and worker. A guard against a
#: runaway rule (a flapping series, ``repeat: 1s`` on many series), not a notification
#: policy: 300 series firing at once still each get their action.
DEFAULT_RATE = "600/1m"
#: Defaults of actions whose receivers are people reading a channel (Slack allows about one
#: message a second per webhook); a setting in ``rate_limits`` overrides them.
ACTION_DEFAULTS = {"slack": "60/1m"}

_rate = re.compile(RATE_PATTERN)


class ParsedRate(NamedTuple):
    """``runs`` per ``period`` seconds (the bucket holds ``runs`` tokens)."""

    runs: int
    period: float


def parse_rate(text: str) -> ParsedRate | None:
    """``"20/1m"`` -> ParsedRate(20, 60.0); ``"none"`` -> None; ValueError otherwise."""
    if _rate.match(text) is None:
        raise ValueError(f"{text!r} {RATE_HINT}")
    if text == "none":
        return None
    count, _, period = text.partition("/")
    return ParsedRate(int(count), parse_duration(period))


class RateLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How often one rule's action may run, per worker. The most specific setting wins:
    the rule file's action entry (`rate_limit`), then `rules`, then `actions`, then `default`
    (built-in: slack 60/1m).
    """

    default: Annotated[Rate, Meta(description="per (rule, action)")] = DEFAULT_RATE
    actions: Annotated[dict[str, Rate], Meta(description="per action (plugin name)")] = \
        msgspec.field(default_factory=dict)
    rules: Annotated[dict[str, Rate], Meta(description="per rule name")] = \
        msgspec.field(default_factory=dict)

    def rate_for(self, rule: str, plugin: str, own: str | None = None) -> ParsedRate | None:
        text = (own or self.rules.get(rule) or self.actions.get(plugin)
                or ACTION_DEFAULTS.get(plugin) or self.default)
        return parse_rate(text)


MatcherText = Annotated[str, Meta(
    min_length=2, description='an Alertmanager matcher: severity="critical", host=~"web-.*"')]


def _matchers(shorthand: dict[str, str], texts: list[str]) -> list[LabelMatcher]:
    return [LabelMatcher(k, "=", v) for k, v in shorthand.items()] + \
        [parse_matcher(t) for t in texts]


class InhibitRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """While an alert matching `source` fires, triggers matching `target` whose `equal`
    labels have the same values (both absent counts as equal) run no action.
    """

    source: Annotated[dict[str, str], Meta(description="label: value (all must match)")] = \
        msgspec.field(default_factory=dict)
    target: Annotated[dict[str, str], Meta(description="label: value (all must match)")] = \
        msgspec.field(default_factory=dict)
    source_matchers: list[MatcherText] = msgspec.field(default_factory=list)
    target_matchers: list[MatcherText] = msgspec.field(default_factory=list)
    equal: list[Annotated[str, Meta(pattern=LABEL_NAME_PATTERN)]] = \
        msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        if not (self.source or self.source_matchers):
            raise ValueError("an inhibit rule needs a source (or source_matchers)")
        if not (self.target or self.target_matchers):
            raise ValueError("an inhibit rule needs a target (or target_matchers)")
        self.sources()  # ValueError for a matcher that does not parse
        self.targets()

    def sources(self) -> list[LabelMatcher]:
        return _matchers(self.source, self.source_matchers)

    def targets(self) -> list[LabelMatcher]:
        return _matchers(self.target, self.target_matchers)
