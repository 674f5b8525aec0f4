"""The engine's input settings: bounds on what it accepts and tracks, and how it receives.

Two sections of ``engine:`` in the config file, each its own Struct here so the
engine's section stays one line per setting:

- ``engine.limits``: what one message may hold (bytes, labels, label lengths)
  and how many series the engine tracks (per rule and in all); past a limit
  input is refused, counted and logged, never silently dropped.
- ``engine.ingest``: ``core`` (plain subscriptions: fastest, at-most-once) or
  ``durable`` (a JetStream stream captures ``metrics.>`` and ``stacks.>`` and the
  engine reads it with a durable consumer: a stall or a restart resumes where it
  was; its position is kept with its checkpoints, see engine/service/durable.py).
  docs/operations.md says which mode guarantees what.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from flarebus.durations import Seconds
from flarebus.events import TOKEN_PATTERN

#: nats-server's default max_payload: no message can be larger unless the server allows it.
DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

_Count = Annotated[int, Meta(ge=1)]
_Token = Annotated[str, Meta(pattern=TOKEN_PATTERN, extra_json_schema={
    "x-hint": "is not a subject token (letters, digits, _ and -)"})]


class InputLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Bounds on the engine's input: each refused message is on flarebus.invalid with its reason."""

    max_message_bytes: Annotated[_Count, Meta(
        description="larger messages are refused unread (reason too-large)")] = \
        DEFAULT_MAX_MESSAGE_BYTES
    max_labels: Annotated[_Count, Meta(
        description="labels per sample (reason too-many-labels)")] = 64
    max_label_value_length: Annotated[_Count, Meta(
        description="characters of one label value (reason label-too-long); names are "
                    "at most 128")] = 1024
    max_series: Annotated[_Count, Meta(
        description="series the engine tracks over all rules; past it new series are "
                    "refused and counted, tracked ones keep working")] = 1_000_000
    max_series_per_rule: Annotated[_Count, Meta(
        description="series one rule tracks; past it that rule's new series are refused "
                    "and counted")] = 100_000


class IngestSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How samples reach the engine: core subscriptions, or a durable JetStream stream."""

    mode: Annotated[Literal["core", "durable"], Meta(
        description="core: plain subscriptions (at-most-once); durable: a JetStream stream "
                    "captures the samples and the engine resumes where it was")] = "core"
    stream: Annotated[_Token, Meta(description="the samples stream (durable mode)")] = \
        "FLAREBUS_SAMPLES"
    max_age: Annotated[Seconds, Meta(
        description="samples older than this leave the stream (and `replay --stream`)")] = \
        24 * 3600.0
    max_bytes: Annotated[_Count, Meta(
        description="the stream's size bound; the oldest samples go first")] = 1024 ** 3
    batch: Annotated[_Count, Meta(description="messages fetched per pull")] = 5000

    def __post_init__(self) -> None:
        self.max_age = float(self.max_age)  # a Seconds decodes as a float subclass
