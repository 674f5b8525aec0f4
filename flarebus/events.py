"""The wire contracts: every message flarebus puts on or takes off the bus.

These Structs and ``schemas/*.schema.json`` describe the same messages; a test
feeds both the same corpus and checks they agree. Decoders are built once here
and reused everywhere, because building a msgspec decoder is the slow part.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal

import msgspec

from flarebus.durations import RATE_PATTERN

#: A subject token: what may stand between two dots of a NATS subject.
TOKEN = r"[A-Za-z0-9_\-]+"
#: End of string. Plain ``$`` also matches before a trailing newline in Python's ``re`` (which
#: msgspec and jsonschema both use), and a newline must never reach a subject.
END = r"(?!\n)$"
#: A metric name: one or more tokens joined by dots (``cpu.usage``, ``http.requests_total``).
METRIC_NAME_PATTERN = rf"^{TOKEN}(\.{TOKEN})*{END}"
#: A label name, as in Prometheus.
LABEL_NAME_PATTERN = rf"^[A-Za-z_][A-Za-z0-9_]*{END}"
TOKEN_PATTERN = rf"^{TOKEN}{END}"

_token_re = re.compile(TOKEN_PATTERN)

SourceName = Annotated[str, msgspec.Meta(pattern=TOKEN_PATTERN, max_length=255)]
LabelName = Annotated[str, msgspec.Meta(pattern=LABEL_NAME_PATTERN, max_length=128)]
Labels = dict[LabelName, str]
Timestamp = Annotated[float, msgspec.Meta(ge=0)]


class _KnownGood:
    """Strings already checked against a pattern, so each distinct one is matched once.

    msgspec runs a ``Meta(pattern=...)`` through ``re`` for every value it decodes,
    which made a metric sample five times dearer to decode than without it; names and
    label keys repeat endlessly, so a set lookup answers almost every time. Bounded:
    hostile input with endless distinct names only makes the set start over.
    """

    __slots__ = ("_good", "_limit", "_max_length", "_pattern", "known")

    def __init__(self, pattern: str, max_length: int, limit: int = 65_536) -> None:
        self._pattern = re.compile(pattern)
        self._max_length = max_length
        self._limit = limit
        self._good: set[str] = set()
        #: ``known(texts)``: all of them checked good already (one C-level set test; False
        #: only says "ask ``in``"). Bound once: the set is cleared, never replaced.
        self.known = self._good.issuperset

    def __contains__(self, text: str) -> bool:
        if text in self._good:
            return True
        if len(text) > self._max_length or self._pattern.match(text) is None:
            return False
        if len(self._good) >= self._limit:
            self._good.clear()
        self._good.add(text)
        return True

    def first_bad(self, texts: Iterable[str]) -> str | None:
        """The first of ``texts`` not good, or None: one C-level set test when all are known."""
        if self.known(texts):
            return None
        return next((t for t in texts if t not in self), None)


_metric_names = _KnownGood(METRIC_NAME_PATTERN, 255)
_label_names = _KnownGood(LABEL_NAME_PATTERN, 128)


def _require_finite(field: str, value: float) -> None:
    """JSON cannot carry NaN or infinity, but the Python API can be handed them."""
    if not math.isfinite(value):
        raise ValueError(f"`{field}` must be a finite number, got {value!r}")


def is_metric_name(name: str) -> bool:
    """True when ``name`` can be the tail of a ``metrics.<name>`` subject."""
    return name in _metric_names


def is_label_name(name: str) -> bool:
    """True when ``name`` can be a label's key (as in Prometheus)."""
    return name in _label_names


#: True when all the given label keys are known label names (False: check them one by one).
known_label_names: Final = _label_names.known


def is_token(name: str) -> bool:
    """True when ``name`` is a single subject token (a rule name, a stack source)."""
    return _token_re.match(name) is not None


METRIC_NAME_HINT = "is not a metric name (dot-separated tokens of letters, digits, _ and -)"
LABEL_NAME_HINT = "is not a label name (letters, digits and _, not starting with a digit)"
TOKEN_HINT = "is not a subject token (letters, digits, _ and -)"


#: A staleness marker is a sample with ``stale: true``: JSON has no NaN, so Prometheus' stale
#: NaN becomes an explicit field, left out (``omit_defaults``) of every ordinary sample, so
#: old messages and old decoders see no change and the decoder one optional bool more.
STALE_DESCRIPTION = ("true: a staleness marker, the series ended at ts (as Prometheus' stale "
                     "NaN); value is ignored (send 0)")


# gc=False: a sample holds only strings, floats and a dict of strings, so it can never be
# part of a reference cycle, and untracked it costs the cyclic garbage collector nothing.
# Tracked, the samples of a busy engine set off a full collection of its hundreds of
# thousands of long-lived states every few hundred messages: a third of the engine's time
# (docs/performance.md). (A comment, not the docstring: that is the schema's description.)
class MetricSample(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """One observation of one series, published on metrics.<name>."""

    # The checks live in __post_init__ rather than in Meta constraints: they run on decode
    # and on construction alike, and they are the engine's hot path (see _KnownGood). The
    # Metas only state them in the generated JSON Schema (extra_json_schema is never run:
    # bench/decode.py shows the decoder as fast as without them).
    name: Annotated[str, msgspec.Meta(extra_json_schema={
        "pattern": METRIC_NAME_PATTERN, "maxLength": 255, "x-hint": METRIC_NAME_HINT})]
    value: float
    ts: Annotated[float | None, msgspec.Meta(
        description="Unix seconds; receive time when absent",
        extra_json_schema={"minimum": 0})] = None
    labels: dict[Annotated[str, msgspec.Meta(extra_json_schema={
        "pattern": LABEL_NAME_PATTERN, "maxLength": 128})], str] = {}
    stale: Annotated[bool, msgspec.Meta(description=STALE_DESCRIPTION)] = False

    def __post_init__(self) -> None:
        if self.name not in _metric_names:
            raise ValueError(f"`name` {self.name!r} {METRIC_NAME_HINT}")
        if not math.isfinite(self.value):
            raise ValueError(f"`value` must be a finite number, got {self.value!r}")
        if self.ts is not None and not (self.ts >= 0 and math.isfinite(self.ts)):
            raise ValueError(f"`ts` must be Unix seconds (finite, >= 0), got {self.ts!r}")
        for key in self.labels:
            if key not in _label_names:
                raise ValueError(f"`labels` key {key!r} {LABEL_NAME_HINT}")


#: The largest finite float: ``Meta(ge=-MAX_FLOAT, le=MAX_FLOAT)`` is ``math.isfinite``, in C.
MAX_FLOAT: Final = sys.float_info.max


class WireSample(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True, gc=False):
    """A MetricSample as it is on the wire, without the Python check on every instance.

    MetricSample checks itself in ``__post_init__`` because it is also built in
    Python, where msgspec's constraints do not run; decoding, that Python call
    was three quarters of the decoding time (bench/decode.py). The engine decodes
    into this twin instead: the value and ``ts`` checks are constraints msgspec
    runs in C, and ``check_wire`` checks a whole message's names and label keys
    (one set test in the common case). The Publisher builds it after checking
    the values itself. Encoded, the two are the same JSON (tests/test_contracts.py).
    """

    name: str
    value: Annotated[float, msgspec.Meta(ge=-MAX_FLOAT, le=MAX_FLOAT)]
    ts: Annotated[float, msgspec.Meta(ge=0, le=MAX_FLOAT)] | None = None
    labels: dict[str, str] = {}
    stale: bool = False


def check_wire(samples: list[WireSample], tail: str) -> tuple[bool, str] | None:
    """What MetricSample's ``__post_init__`` checks, for one message's samples, plus their subject.

    None when all are good, else ``(is_mismatch, detail)``: every name must be
    ``tail`` (the subject's), a metric name; every label key a label name.
    """
    if tail not in _metric_names:
        return False, f"`name` {tail!r} {METRIC_NAME_HINT}"
    known = _label_names.known  # the C call first: first_bad is a Python one
    for s in samples:
        if s.name != tail:
            if s.name not in _metric_names:
                return False, f"`name` {s.name!r} {METRIC_NAME_HINT}"
            return True, f"sample name {s.name!r} does not match the subject's {tail!r}"
        labels = s.labels
        if labels and not known(labels) and (bad := _label_names.first_bad(labels)) is not None:
            return False, f"`labels` key {bad!r} {LABEL_NAME_HINT}"
    return None


class Stack(msgspec.Struct, forbid_unknown_fields=True):
    """One sampled call stack, root frame first, with its weight."""

    frames: Annotated[list[Annotated[str, msgspec.Meta(min_length=1)]], msgspec.Meta(min_length=1)]
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0

    def __post_init__(self) -> None:
        _require_finite("weight", self.weight)


class StackSample(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Sampled call stacks of one source, published on stacks.<source>."""

    source: SourceName
    stacks: list[Stack]
    ts: Timestamp | None = None
    unit: Literal["samples", "nanoseconds"] = "samples"
    labels: Labels = {}

    def __post_init__(self) -> None:
        if self.ts is not None:
            _require_finite("ts", self.ts)


TriggerState = Literal["firing", "resolved"]


class ActionRef(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """An action a trigger asks for: a plugin name, its per-rule config, the transitions it hears.
    """

    plugin: Annotated[str, msgspec.Meta(min_length=1)]
    config: dict[str, Any] = {}
    on: Annotated[list[TriggerState], msgspec.Meta(
        description="the transitions this action runs for: firing, resolved (default: both)")
    ] = []
    rate_limit: Annotated[str, msgspec.Meta(
        pattern=RATE_PATTERN, description="at most N runs per DURATION (20/1m) per worker, "
        "or none; default: the worker's rate_limits")] | None = None

    def hears(self, state: str) -> bool:
        """Whether this action runs for a trigger in ``state`` (no ``on``: every state)."""
        return not self.on or state in self.on


class GroupSpec(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """A rule's ``group:`` as the worker receives it: unset fields take the worker's defaults.

    Resolved in the worker (flarebus.grouping.resolve_policy) rather than in the engine,
    because the defaults are the ``group:`` section of the worker's config file.
    """

    enabled: bool = True
    by: list[str] | None = None
    wait: float | None = None
    interval: float | None = None
    repeat: float | None = None


class Trigger(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """What the engine publishes on triggers.<rule> when a rule fires or resolves."""

    # metric_name, value, threshold and duration are the arguments action plugins of the
    # metric-reader lineage received (Execute(ctx, metricName, value, threshold, duration));
    # the names are kept on purpose.

    id: Annotated[str, msgspec.Meta(min_length=1)]
    rule: SourceName
    state: TriggerState
    severity: str
    metric_name: str
    value: float
    threshold: str
    duration: Annotated[float, msgspec.Meta(ge=0)]
    labels: Labels
    annotations: dict[str, str]
    active_since: Timestamp
    at: Timestamp
    actions: list[ActionRef]
    #: the rule's grouping; None: no ``group:`` in the rule (the worker's config may still group)
    group: GroupSpec | None = None

    def __post_init__(self) -> None:
        for field in ("value", "duration", "active_since", "at"):
            _require_finite(field, getattr(self, field))


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """The identity of a series: metric name plus its full label set, canonical and stable.

    ``cpu.usage{host="web-1",zone="a"}`` - labels sorted, values JSON-escaped.
    Used as the state key, the KV checkpoint key's source and the shard hash input.
    """
    if not labels:
        return name
    inner = ",".join(f"{k}={_json_str(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _json_str(value: str) -> str:
    """``value`` as a JSON string, as msgspec writes it; printable text without ``"`` or ``\\``
    needs no escape (msgspec writes non-ASCII as UTF-8), so it is just quoted: faster."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return encoder.encode(value).decode()


def shard_of(key: str, shards: int) -> int:
    """Which of ``shards`` engines owns the series ``key``: a stable hash, same in every process."""
    if shards <= 1:
        return 0
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


# One decoder (and encoder) per message kind, built once and reused.
metric_decoder: msgspec.json.Decoder[MetricSample | list[MetricSample]] = msgspec.json.Decoder(
    MetricSample | list[MetricSample]
)
wire_decoder: msgspec.json.Decoder[WireSample | list[WireSample]] = \
    msgspec.json.Decoder(WireSample | list[WireSample])
stack_decoder: msgspec.json.Decoder[StackSample | list[StackSample]] = msgspec.json.Decoder(
    StackSample | list[StackSample]
)
trigger_decoder: msgspec.json.Decoder[Trigger] = msgspec.json.Decoder(Trigger)
encoder = msgspec.json.Encoder()


def decode_metrics(data: bytes) -> list[MetricSample]:
    """Decode a ``metrics.*`` payload: one sample or a batch, always a list back."""
    decoded = metric_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def decode_stacks(data: bytes) -> list[StackSample]:
    """Decode a ``stacks.*`` payload: one stack sample or a batch, always a list back."""
    decoded = stack_decoder.decode(data)
    return decoded if isinstance(decoded, list) else [decoded]


def metric_sample(
    name: str, value: float, ts: float | None = None, labels: dict[str, str] | None = None,
    *, stale: bool = False
) -> MetricSample:
    """Build a MetricSample from Python values, validated exactly as on the wire."""
    return msgspec.convert(
        {"name": name, "value": value, "ts": ts, "labels": labels or {}, "stale": stale},
        MetricSample,
        strict=False,
    )


def stale_marker(name: str, ts: float | None = None,
                 labels: dict[str, str] | None = None) -> MetricSample:
    """The staleness marker of the series ``name{labels}``: it ended at ``ts``."""
    return MetricSample(name, 0.0, ts, labels or {}, True)


def to_builtins(obj: Any) -> Any:
    """A Struct as plain dicts and lists (for JSON Schema validation and printing)."""
    return msgspec.to_builtins(obj)

