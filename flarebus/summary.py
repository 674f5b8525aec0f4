"""The summary each engine keeps in the state bucket, for ``flarebus status`` and the console.

The evaluator's per-series state is private (msgspec bytes only the evaluator
reads), so each engine also writes, at every checkpoint, what an operator
asks first: which rules are loaded (with where they are defined and what
they test), and which series are pending or firing since when. One key per
shard: ``meta.engine.<i>-of-<N>``. The Structs live here, among the shared
contracts, because readers other than the engine (the CLI, the web console)
decode them and must not import the engine's service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from flarebus.kv import META_PREFIX, read_entries

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

SUMMARY_PREFIX = "engine."
MAX_LISTED_SERIES = 1000
#: a summary older than this means its engine is not running (or cannot reach NATS)
STALE_AFTER = 60.0


class RuleInfo(msgspec.Struct, omit_defaults=True):
    name: str
    metric: str | None = None
    fingerprint: str = ""
    enabled: bool = True
    #: where the rule is defined, and what it tests (empty in summaries of older engines)
    file: str = ""
    line: int = 0
    threshold: str = ""
    for_seconds: float = 0.0
    severity: str = ""
    stack_source: str | None = None
    #: this engine's series of the rule at the summary's time (tracked = inactive + the rest)
    tracked: int = 0
    pending: int = 0
    firing: int = 0


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

#: the summaries' keys in the state bucket, under its stream's subjects
SUMMARY_KEYS = META_PREFIX + SUMMARY_PREFIX


async def read_summaries(kv: KeyValue) -> list[EngineSummary]:
    """Every engine's latest summary in the state bucket, by shard."""
    raw = await read_entries(kv, SUMMARY_KEYS)
    return sorted((summary_decoder.decode(v) for v in raw.values()), key=lambda s: s.shard)
