"""What the evaluator reports about itself: counts, and one line per tracked state.

Kept apart from the evaluator so that readers of these (the engine's summary,
``flarebus status``, the web console) need not import the hot loop's module.
"""

from __future__ import annotations

import msgspec


class EvaluatorStats(msgspec.Struct):
    series: int
    pending: int
    firing: int
    rules: int
    samples_dropped_out_of_order: int
    #: per rule: [series tracked, pending, firing] (inactive = the rest)
    by_rule: dict[str, list[int]] = {}


class SeriesStatus(msgspec.Struct):
    rule: str
    series_key: str
    labels: dict[str, str]
    state: str
    since: float
    value: float
    stage: int = 0
