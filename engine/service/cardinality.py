"""The cardinality guard's counts, turned into the engine's figures and a loud log line.

The evaluator (pure, no I/O) counts what its ``SeriesGuard`` refused; after
each batch the engine asks this report, which costs one integer comparison
while nothing is refused. When something is: ``dropped["cardinality"]`` (samples),
``series_refused`` by rule in the stats (``flarebus status`` shows both), the
OTel counter of dropped samples, and an ERROR line at most once per interval.
"""

from __future__ import annotations

import logging

from flarebus.engine.language.cardinality import GLOBAL, SeriesGuard
from flarebus.engine.service.metrics import EngineStats
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.cardinality")


class CardinalityReport:
    """Reports what ``guard`` refused since the last look."""

    def __init__(self, guard: SeriesGuard, stats: EngineStats, *, interval: float = 10.0) -> None:
        self._guard = guard
        self._stats = stats
        self._seen = 0
        self._ratelog = RateLimitedLog(log, interval)

    def check(self) -> None:
        guard = self._guard
        if guard.refused_total == self._seen:
            return
        self._stats.drop("cardinality", guard.refused_total - self._seen)
        self._seen = guard.refused_total
        self._stats.series_refused = dict(guard.refused)
        at_limit = sorted(r for r, n in guard.per_rule.items() if n >= guard.max_per_rule)
        where = [f"all rules ({guard.total} series, engine.limits.max_series "
                 f"{guard.max_series})"] if guard.refused.get(GLOBAL) else []
        where += [f"rule {r} ({guard.per_rule[r]} series)" for r in at_limit]
        self._ratelog.log(
            logging.ERROR, "limit",
            f"CARDINALITY LIMIT reached by {', '.join(where) or 'a rule'} "
            f"(engine.limits.max_series_per_rule {guard.max_per_rule}): samples of NEW series "
            f"are refused ({guard.refused_total} so far), tracked series keep working. A label "
            f"that changes with every sample (a request id, a timestamp) makes every sample a "
            f"new series; drop it from the samples, or raise the limit")
