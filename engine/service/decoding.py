"""Decoding a batch of sample messages: one msgspec decode each, checks, rejections by reason.

The engine's ingest (ingest.py) and durable ingest (durable.py) both hand their
messages here; what is rejected comes back with its reason for
``flarebus.invalid``, what is valid as segments of samples (one per message, with
its trace headers) for the evaluator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import attrgetter, methodcaller
from typing import Annotated, Any, Generic, TypeVar

import msgspec
from nats.aio.msg import Msg

from flarebus.engine.service.invalid import (
    EMPTY_BATCH,
    INVALID_SAMPLE,
    LABEL_TOO_LONG,
    MALFORMED_JSON,
    SUBJECT_MISMATCH,
    TOO_LARGE,
    TOO_MANY_LABELS,
)
from flarebus.events import (
    StackSample,
    WireSample,
    check_wire,
    stack_decoder,
    wire_decoder,
)
from flarebus.ingest_settings import InputLimits
from flarebus.partitions import strip_mark

S = TypeVar("S", WireSample, StackSample)
Headers = Mapping[str, str]


@dataclass(slots=True)
class Segment(Generic[S]):
    """Consecutive samples of a batch evaluated in one call; ``headers`` set when traced."""

    samples: list[S]
    headers: Headers | None = None


@dataclass(slots=True)
class Rejection:
    msg: Msg
    reason: str
    detail: str


@dataclass(slots=True)
class Decoded(Generic[S]):
    segments: list[Segment[S]]
    rejected: list[Rejection]
    samples: int


Check = Callable[[list[Any], str], tuple[bool, str] | None]
DEFAULT_LIMITS = InputLimits()
#: The fewest bytes one label takes in JSON (``"a":"",``): a message shorter than
#: ``max_labels`` times this cannot hold a sample with too many labels.
_MIN_LABEL_BYTES = 7


_labels_of = attrgetter("labels")
_values_of = methodcaller("values")


def check_labels(samples: list[Any], limits: InputLimits) -> tuple[str, str] | None:
    """(reason, detail) for the first sample past the label limits, None when all are within.

    The common answer (all within) is two C-level passes, map/max over the label
    dicts, with no Python call per sample; only a violation is then looked for.
    """
    most, longest = limits.max_labels, limits.max_label_value_length
    dicts = list(map(_labels_of, samples))
    if max(map(len, dicts)) > most:
        n = next(len(d) for d in dicts if len(d) > most)
        return TOO_MANY_LABELS, (f"a sample has {n} labels, more than "
                                 f"engine.limits.max_labels ({most})")
    values = chain.from_iterable(map(_values_of, dicts))
    if max(map(len, values), default=0) > longest:
        key, value = next((k, v) for d in dicts for k, v in d.items() if len(v) > longest)
        return LABEL_TOO_LONG, (f"label {key!r} holds {len(value)} characters, more "
                                f"than engine.limits.max_label_value_length ({longest})")
    return None


def check_sources(samples: list[StackSample], tail: str) -> tuple[bool, str] | None:
    """Every stack sample's source must be the subject's tail (StackSample checked the rest)."""
    wrong = next((s.source for s in samples if s.source != tail), None)
    if wrong is None:
        return None
    return True, f"sample source {wrong!r} does not match the subject's {tail!r}"


@lru_cache(maxsize=8)
def limited_wire_decoder(max_labels: int, max_label_value_length: int
                         ) -> msgspec.json.Decoder[WireSample | list[WireSample]]:
    """WireSample with ``engine.limits``' label bounds as msgspec constraints, checked in C.

    ``check_labels``' passes over every sample's labels cost a third of a batch's
    decoding (docs/performance.md, fourth round); as constraints they cost nothing
    measurable. The samples are a subclass of WireSample, so nothing downstream
    sees a difference. A message this refuses is decoded again by ``wire_decoder``
    (``decode_batch``'s ``fallback``), so the rejection still says which limit it broke.
    """
    labels = Annotated[dict[str, Annotated[str, msgspec.Meta(max_length=max_label_value_length)]],
                       msgspec.Meta(max_length=max_labels)]
    limited = msgspec.defstruct("WireSample", [("labels", labels, msgspec.field(
        default_factory=dict))], bases=(WireSample,))
    return msgspec.json.Decoder(limited | list[limited])  # type: ignore[valid-type]


def decode_batch(msgs: Sequence[Msg], decoder: msgspec.json.Decoder[Any], prefix_len: int,
                 check: Check, *, traced: bool = False, limits: InputLimits = DEFAULT_LIMITS,
                 fallback: msgspec.json.Decoder[Any] | None = None) -> Decoded[S]:
    """Decode a batch of messages: valid samples in arrival order, and what was rejected why.

    A message is one sample or a JSON array of them; ``check`` sees its samples
    and the subject's tail (each sample's name must be that tail) and says what
    is wrong, if anything: then the whole message is rejected, as it is past ``limits``
    (its size first, unread; labels only when the message is long enough to break
    them, so a typical small sample costs nothing more). With ``fallback``,
    ``decoder`` checks the label limits itself and a message it refuses is decoded
    again with ``fallback`` to tell a broken limit from an invalid sample. With
    ``traced``, a message carrying a trace context becomes its own segment so the
    spans it causes can join its trace; the others are merged into as few segments
    as possible.
    """
    segments: list[Segment[S]] = []
    current: list[S] = []
    rejected: list[Rejection] = []
    count = 0
    max_bytes = limits.max_message_bytes
    label_bound = min(limits.max_labels * _MIN_LABEL_BYTES, limits.max_label_value_length)
    for msg in msgs:
        size = len(msg.data)
        if size > max_bytes:
            rejected.append(Rejection(msg, TOO_LARGE, f"{size} bytes, more than "
                                      f"engine.limits.max_message_bytes ({max_bytes})"))
            continue
        try:
            decoded = decoder.decode(msg.data)
            # with a fallback the decoder checked the label limits; else only a message
            # long enough to break them is looked at
            check_label_limits = fallback is None and size > label_bound
        except msgspec.ValidationError as exc:
            if fallback is None:
                rejected.append(Rejection(msg, INVALID_SAMPLE, str(exc)))
                continue
            try:  # past a label limit, or invalid whatever the limits: the plain decoder says
                decoded = fallback.decode(msg.data)
                check_label_limits = True  # which limit it broke
            except msgspec.ValidationError as plain:
                rejected.append(Rejection(msg, INVALID_SAMPLE, str(plain)))
                continue
        except msgspec.DecodeError as exc:
            rejected.append(Rejection(msg, MALFORMED_JSON, str(exc)))
            continue
        if type(decoded) is list:
            if not decoded:
                rejected.append(Rejection(msg, EMPTY_BATCH, "an empty array holds no sample"))
                continue
            samples: list[S] = decoded
        else:
            samples = [decoded]
        if (wrong := check(samples, strip_mark(msg.subject[prefix_len:]))) is not None:
            mismatch, detail = wrong
            rejected.append(Rejection(msg, SUBJECT_MISMATCH if mismatch else INVALID_SAMPLE,
                                      f"{detail} (subject {msg.subject!r})"))
            continue
        if check_label_limits and (past := check_labels(samples, limits)) is not None:
            rejected.append(Rejection(msg, *past))
            continue
        count += len(samples)
        headers = msg.headers if traced else None
        if headers and "traceparent" in headers:
            if current:
                segments.append(Segment(current))
                current = []
            segments.append(Segment(samples, headers))
        else:
            current.extend(samples)
    if current:
        segments.append(Segment(current))
    return Decoded(segments, rejected, count)


def decode_metric_batch(msgs: Sequence[Msg], prefix_len: int, *, traced: bool = False,
                        limits: InputLimits = DEFAULT_LIMITS) -> Decoded[WireSample]:
    """Metric messages as WireSamples: MetricSample's checks, without its Python call each,
    and the label limits checked by msgspec while it decodes."""
    return decode_batch(msgs, limited_wire_decoder(limits.max_labels,
                                                   limits.max_label_value_length),
                        prefix_len, check_wire, traced=traced, limits=limits,
                        fallback=wire_decoder)


def decode_stack_batch(msgs: Sequence[Msg], prefix_len: int, *, traced: bool = False,
                       limits: InputLimits = DEFAULT_LIMITS) -> Decoded[StackSample]:
    return decode_batch(msgs, stack_decoder, prefix_len, check_sources, traced=traced,
                        limits=limits)
