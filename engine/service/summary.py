"""The small summary an engine keeps in the state bucket for ``flarebus status``.

The evaluator's per-series state is private (msgspec bytes only the evaluator
reads), so each engine also writes, at every checkpoint, what an operator
asks first: which rules are loaded, and which series are pending or firing
since when. One key per shard: ``meta.engine.<i>-of-<N>``; a coordinated
engine's is ``meta.engine.<engine id>``.
"""

from __future__ import annotations

import msgspec

SUMMARY_PREFIX = "engine."
MAX_LISTED_SERIES = 1000


class RuleInfo(msgspec.Struct, omit_defaults=True):
    name: str
    metric: str | None = None
    fingerprint: str = ""
    enabled: bool = True


class SeriesInfo(msgspec.Struct, omit_defaults=True):
    rule: str
    series: str
    state: str
    since: float | None = None
    value: float | None = None
    labels: dict[str, str] = {}


class EngineSummary(msgspec.Struct, omit_defaults=True):
    shard: str
    host: str
    pid: int
    started_at: float
    updated_at: float
    rule_files: list[str]
    rules: list[RuleInfo]
    series: int
    pending: int
    firing: int
    states: list[SeriesInfo]
    truncated: bool = False
    stats: dict[str, object] = {}
    #: a coordinated engine's partitions, from the lease registry (``flarebus status``)
    partitions: list[int] | None = None


def summary_key(shard_index: int, shard_count: int) -> str:
    """The summary's key under ``meta.`` in the state bucket."""
    return f"{SUMMARY_PREFIX}{shard_index}-of-{shard_count}"


summary_encoder = msgspec.json.Encoder()
summary_decoder = msgspec.json.Decoder(EngineSummary)
