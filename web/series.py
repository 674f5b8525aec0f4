"""The Series page's query: filter by rule, state and label matchers, then one page of rows.

Done on the server, over every engine's summary (ten engines list ten thousand
series), so the browser only ever receives one page. The summaries are
written at each engine checkpoint; the triggers stream is live, so a trigger
newer than its engine's summary overrides the state it shows (a series
fires, or resolves, on the page the moment the trigger is published).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from flarebus.errors import UsageError
from flarebus.events import Trigger, series_key
from flarebus.summary import EngineSummary, RuleInfo, SeriesInfo

PER_PAGE = 50
MAX_PER_PAGE = 500
STATES = ("firing", "pending")

_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*'
                      r'(?:"((?:[^"\\]|\\.)*)"|([^,\s"]*))\s*(?:,|$)')


@dataclass(frozen=True)
class LabelMatcher:
    """``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex`` (Prometheus' four)."""

    name: str
    op: str
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        have = labels.get(self.name, "")
        if self.regex is not None:
            return bool(self.regex.fullmatch(have)) == (self.op == "=~")
        return (have == self.value) == (self.op == "=")

    @property
    def text(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'


def parse_matchers(text: str) -> list[LabelMatcher]:
    """``host="web-1", zone=~"eu-.*"`` (braces optional); UsageError names what is wrong."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    out: list[LabelMatcher] = []
    pos = 0
    while pos < len(body) and body[pos:].strip():
        m = _MATCHER.match(body, pos)
        if m is None:
            raise UsageError(f"label matcher at {body[pos:].strip()[:40]!r}: "
                             'write name="value", name!="value", name=~"regex" or name!~"regex"')
        name, op, quoted, bare = m.groups()
        value = quoted.replace('\\"', '"') if quoted is not None else bare
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise UsageError(f"label matcher {name}{op}: bad regex: {exc}") from None
        out.append(LabelMatcher(name, op, value, regex))
        pos = m.end()
    return out


@dataclass
class Row:
    """One listed series, with its rule and engine (where the rule says what it tests)."""

    info: SeriesInfo
    engine: str
    rule: RuleInfo | None = None

    def fires_at(self) -> float | None:
        """When a pending series fires if it stays over its threshold."""
        if self.info.state != "pending" or self.info.since is None or self.rule is None:
            return None
        return self.info.since + self.rule.for_seconds


@dataclass
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int
    per_page: int
    truncated: bool = False
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def rules_by_name(summaries: Iterable[EngineSummary]) -> dict[str, RuleInfo]:
    out: dict[str, RuleInfo] = {}
    for s in summaries:
        for r in s.rules:
            out.setdefault(r.name, r)
    return out


def _covers(trigger: Trigger, info: SeriesInfo) -> bool:
    return trigger.rule == info.rule and all(trigger.labels.get(k) == v
                                             for k, v in info.labels.items())


def live_rows(summaries: Sequence[EngineSummary], triggers: Sequence[Trigger]) -> list[Row]:
    """Every listed series, with triggers newer than their engine's summary applied.

    ``triggers`` newest last; only each series' newest trigger counts.
    """
    rules = rules_by_name(summaries)
    rows = [Row(info, s.shard, rules.get(info.rule)) for s in summaries for info in s.states]
    oldest = min((s.updated_at for s in summaries), default=0.0)
    newest: dict[tuple[str, str], Trigger] = {}
    for t in triggers:
        if t.at > oldest:
            newest[(t.rule, series_key(t.metric_name, t.labels))] = t
    if not newest:
        return rows
    updated = {s.shard: s.updated_at for s in summaries}
    by_rule: dict[str, list[Row]] = {}
    for row in rows:
        by_rule.setdefault(row.info.rule, []).append(row)
    gone: set[int] = set()
    for (rule, key), t in newest.items():
        matched = [r for r in by_rule.get(rule, ()) if _covers(t, r.info)
                   and t.at > updated.get(r.engine, 0.0)]
        if t.state == "resolved":
            gone.update(id(r) for r in matched)
        elif matched:
            for r in matched:
                r.info = SeriesInfo(rule=rule, series=r.info.series, state="firing",
                                    since=t.active_since, value=t.value, labels=r.info.labels)
        elif not any(_covers(t, r.info) for r in by_rule.get(rule, ())):
            rows.append(Row(SeriesInfo(rule=rule, series=key, state="firing",
                                       since=t.active_since, value=t.value,
                                       labels=dict(t.labels)), "trigger", rules.get(rule)))
    return [r for r in rows if id(r) not in gone]


def counts_by_rule(rows: Iterable[Row]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        per = out.setdefault(row.info.rule, {"firing": 0, "pending": 0})
        if row.info.state in per:
            per[row.info.state] += 1
    return out


def select(rows: Sequence[Row], *, rule: str = "", state: str = "",
           matchers: Sequence[LabelMatcher] = (), page: int = 1,
           per_page: int = PER_PAGE) -> Page:
    """The rows that pass the filters, firing first then by rule and series, one page of them."""
    per_page = max(1, min(per_page, MAX_PER_PAGE))
    chosen = [r for r in rows
              if (not rule or r.info.rule == rule) and (not state or r.info.state == state)
              and all(m.matches(r.info.labels) for m in matchers)]
    chosen.sort(key=lambda r: (r.info.state != "firing", r.info.rule, r.info.series))
    pages = max(1, -(-len(chosen) // per_page))
    page = max(1, min(page, pages))
    start = (page - 1) * per_page
    return Page(chosen[start:start + per_page], len(chosen), page, pages, per_page)
