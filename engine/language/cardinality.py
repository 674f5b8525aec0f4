"""The cardinality guard: bounds on the series the evaluator tracks, per rule and in all.

A label that churns (a request id, a timestamp put in a label by mistake)
makes every sample a new series, and each series costs memory until it goes
stale. Past ``max_series`` in all, or ``max_series_per_rule`` for one rule, a
*new* series is refused for that rule (for every rule, past the global bound):
its samples are counted as refused, per rule, and evaluate nothing; the series
already tracked keep working, and a refused series is admitted as soon as
tracked ones go stale and make room. The engine turns the counts into a
rate-limited log line, a metric and a line of ``flarebus status``.

Only new series pay for the guard (the evaluator asks it when it would create
an entry), so the hot path of known series is unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from flarebus.engine.language.series import Check, Entry

#: The key of ``refused`` for series refused by the global bound.
GLOBAL = "*"


class SeriesGuard:
    """Counts tracked series per rule and refuses new ones past the limits."""

    def __init__(self, max_series: int, max_per_rule: int) -> None:
        self.max_series = max_series
        self.max_per_rule = max_per_rule
        self.total = 0
        self.per_rule: Counter[str] = Counter()
        #: samples of new series refused, by rule (GLOBAL: the global bound refused them)
        self.refused: Counter[str] = Counter()
        self.refused_total = 0

    def admit(self, matching: list[Check]) -> list[Check]:
        """The checks a new series may be tracked for ([] when none: the sample is refused)."""
        if self.total >= self.max_series:
            self.refused[GLOBAL] += 1
            self.refused_total += 1
            return []
        full = {c.rule.name for c in matching if self.per_rule[c.rule.name] >= self.max_per_rule}
        if not full:
            return matching
        for rule in full:
            self.refused[rule] += 1
        self.refused_total += 1
        return [c for c in matching if c.rule.name not in full]

    def track(self, entry: Entry) -> None:
        self.total += 1
        for rule in _rules(entry):
            self.per_rule[rule] += 1

    def forget(self, entry: Entry) -> None:
        self.total -= 1
        for rule in _rules(entry):
            self.per_rule[rule] -= 1

    def recount(self, entries: Iterable[Entry]) -> None:
        """After a reload changed which rules track which series."""
        self.total = 0
        self.per_rule.clear()
        for entry in entries:
            self.track(entry)


def _rules(entry: Entry) -> set[str]:
    return {st.check.rule.name for st in entry.states}
