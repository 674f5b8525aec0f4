"""The engine summary: its Structs are shared contracts in ``flarebus.summary`` (the web
console and ``flarebus status`` read them); what is the engine's own is writing one that
always fits the server's max_payload (``encode_fitting``). One key per shard:
``meta.engine.<i>-of-<N>``; a coordinated engine's is ``meta.engine.<engine id>``.
"""

import os
import socket
from typing import Any

from flarebus.engine.language.evaluator import Evaluator
from flarebus.engine.language.rulefile import RuleSet
from flarebus.summary import MAX_LISTED_SERIES, EngineSummary, RuleInfo, SeriesInfo, summary_encoder

#: Room kept under the server's max_payload for the KV subject and protocol framing.
_FRAMING = 1024


def encode_fitting(summary: EngineSummary, max_payload: int) -> bytes:
    """The summary encoded within ``max_payload``: fewer listed series (``truncated``) if need be.

    Whatever the input (thousands of long labels on the firing series), the
    status write must fit, or ``flarebus status`` goes stale while the engine runs.
    The listed series are halved until it fits, then the rule list is cut.
    """
    budget = max(_FRAMING, max_payload - _FRAMING)
    data = summary_encoder.encode(summary)
    while len(data) > budget and summary.states:
        summary.states = summary.states[:len(summary.states) // 2]
        summary.truncated = True
        data = summary_encoder.encode(summary)
    while len(data) > budget and summary.rules:
        summary.rules = summary.rules[:len(summary.rules) // 2]
        summary.truncated = True
        data = summary_encoder.encode(summary)
    return data


def build_summary(evaluator: Evaluator, rules: RuleSet, *, shard: str, started_at: float,
                  now: float, rule_files: list[str], stats: dict[str, object]) -> EngineSummary:
    """The summary of one engine: its rules, its counts, and the first active series."""
    listed: list[SeriesInfo] = []
    truncated = False
    for status in evaluator.states(active=True):
        if len(listed) >= MAX_LISTED_SERIES:
            truncated = True
            break
        listed.append(SeriesInfo(
            rule=status.rule, series=status.series_key, state=str(status.state),
            since=status.since, value=status.value, labels=dict(status.labels or {})))
    counts = evaluator.stats()  # one pass over every state, not one per figure
    infos = [RuleInfo(name=r.name, metric=getattr(r, "metric", None) or _expr_text(r),
                      fingerprint=getattr(r, "fingerprint", ""),
                      enabled=bool(getattr(r, "enabled", True)), file=r.file, line=r.line,
                      threshold=r.when.text if r.when is not None else "",
                      for_seconds=r.for_, severity=r.severity,
                      stack_source=r.stack.source if r.stack else None,
                      **_counts(counts.by_rule.get(r.name)))
             for r in rules.rules]
    return EngineSummary(
        shard=shard, host=socket.gethostname(), pid=os.getpid(), started_at=started_at,
        updated_at=now, rule_files=rule_files, rules=infos, series=counts.series,
        pending=counts.pending, firing=counts.firing, states=listed, truncated=truncated,
        stats=stats)


def _expr_text(rule: Any) -> str | None:
    """What an expr rule reads, for the status: its expression."""
    expr = getattr(rule, "expr", None)
    return None if expr is None else f"expr: {expr.text}"


def _counts(counts: list[int] | None) -> dict[str, int]:
    tracked, pending, firing = counts or (0, 0, 0)
    return {"tracked": tracked, "pending": pending, "firing": firing}
