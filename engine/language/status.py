"""What the evaluator reports about itself: counts, and one line per tracked state.

Kept apart from the evaluator so that readers of these (the engine's summary,
``flarebus status``, the web console) need not import the hot loop's module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import msgspec

from flarebus.engine.language.series import FIRING, INACTIVE, PENDING, PHASE_NAMES, Entry, Phase


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


def count_states(entries: Iterable[Entry], *, rules: int, dropped: int) -> EvaluatorStats:
    """Series, pending and firing states, in all and per rule: one pass over every state."""
    pending = firing = 0
    series = 0
    by_rule: dict[str, list[int]] = {}
    for entry in entries:
        series += 1
        for st in entry.states:
            counts = by_rule.setdefault(st.check.rule.name, [0, 0, 0])
            counts[0] += 1
            if st.phase == PENDING:
                pending += 1
                counts[1] += 1
            elif st.phase == FIRING:
                firing += 1
                counts[2] += 1
    return EvaluatorStats(series=series, pending=pending, firing=firing, rules=rules,
                          samples_dropped_out_of_order=dropped, by_rule=by_rule)


def list_states(entries: Callable[[], Iterable[Entry]], *,
                active: bool = False) -> Iterator[SeriesStatus]:
    """Every tracked (rule, series): firing first, then pending, then inactive (not ``active``).

    ``active`` skips the inactive ones without building their statuses: the
    engine's summary lists only those, and every checkpoint writes it (with 40k
    inactive states, building them all held the event loop for 24 ms).
    """
    phases: tuple[Phase, ...] = (FIRING, PENDING) if active else (FIRING, PENDING, INACTIVE)
    for phase in phases:
        for entry in entries():
            for st in entry.states:
                if st.phase == phase:
                    since = st.since if phase == FIRING else (
                        st.t0 if phase == PENDING else entry.last_ts)
                    yield SeriesStatus(rule=st.check.rule.name, series_key=entry.key,
                                       labels=entry.labels, state=PHASE_NAMES[phase],
                                       since=since,
                                       value=entry.value if entry.calm else st.value,
                                       stage=st.check.stage)
