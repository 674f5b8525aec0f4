"""The Structs of flarebus/events.py and the JSON Schemas of schemas/ accept the same messages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flarebus import events, schemas
from flarebus.validation import validator

CORPUS = Path(__file__).parent / "data" / "contracts"

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "metric_sample": events.metric_decoder,
    "stack_sample": events.stack_decoder,
    "trigger": events.trigger_decoder,
}


def struct_accepts(kind: str, raw: bytes) -> bool:
    try:
        DECODERS[kind].decode(raw)
    except msgspec.DecodeError:
        return False
    return True


def schema_accepts(kind: str, raw: bytes) -> bool:
    return validator(kind).is_valid(json.loads(raw))


def corpus(kind: str, valid: bool) -> list[bytes]:
    path = CORPUS / f"{kind}.{'valid' if valid else 'invalid'}.jsonl"
    return [line.encode() for line in path.read_text().splitlines() if line.strip()]


CASES = [(kind, valid, raw) for kind in DECODERS for valid in (True, False)
         for raw in corpus(kind, valid)]


CASE_IDS = [f"{k}-{'ok' if v else 'bad'}-{i}" for i, (k, v, _) in enumerate(CASES)]


@pytest.mark.parametrize("name", schemas.NAMES)
def test_each_shipped_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    """The metaschema accepts every schema in schemas/ (validator() trusts them unchecked)."""
    jsonschema.Draft202012Validator.check_schema(schemas.load(name))


@pytest.mark.parametrize(("kind", "valid", "raw"), CASES, ids=CASE_IDS)
def test_corpus_is_judged_alike(kind: str, valid: bool, raw: bytes) -> None:
    """Every corpus example is accepted (or rejected) by both the Struct and the schema."""
    assert struct_accepts(kind, raw) is valid, raw
    assert schema_accepts(kind, raw) is valid, raw


def test_corpus_covers_each_kind_both_ways() -> None:
    """The corpus is not empty on either side for any message kind."""
    for kind in DECODERS:
        assert len(corpus(kind, True)) >= 2 and len(corpus(kind, False)) >= 5


# Values near the edges of each field's rules: the places where two validators could disagree.
names = st.one_of(
    st.from_regex(events.METRIC_NAME_PATTERN, fullmatch=True),
    st.sampled_from(["", ".", "a.", ".a", "a..b", "a b", "a*", "a>", "a\n", "é", "a" * 256]),
    st.text(max_size=8),
)
label_keys = st.one_of(st.from_regex(events.LABEL_NAME_PATTERN, fullmatch=True),
                       st.sampled_from(["", "1a", "a-b", "a\n", "a" * 129]), st.text(max_size=4))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5))
labels = st.one_of(st.dictionaries(label_keys, st.one_of(st.text(max_size=5), json_scalars),
                                   max_size=3), json_scalars, st.lists(st.text(max_size=3)))
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5),
                    st.booleans(), st.text(max_size=3), st.none())
MISSING = object()


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(MISSING), strategy)


@st.composite
def metric_messages(draw: st.DrawFn) -> Any:
    sample = {"name": draw(maybe(names)), "value": draw(maybe(numbers)),
              "ts": draw(maybe(numbers)), "labels": draw(maybe(labels))}
    if draw(st.booleans()):
        sample["extra"] = draw(maybe(json_scalars))
    return {k: v for k, v in sample.items() if v is not MISSING}


@st.composite
def stack_messages(draw: st.DrawFn) -> Any:
    frames = draw(st.one_of(st.lists(st.text(max_size=4), max_size=3), json_scalars))
    stack = {"frames": frames, "weight": draw(maybe(numbers))}
    message = {"source": draw(maybe(st.one_of(names, label_keys))),
               "stacks": draw(maybe(st.one_of(st.lists(st.just(
                   {k: v for k, v in stack.items() if v is not MISSING}), max_size=2),
                   json_scalars))),
               "unit": draw(maybe(st.sampled_from(["samples", "nanoseconds", "ms", 1]))),
               "ts": draw(maybe(numbers)), "labels": draw(maybe(labels))}
    return {k: v for k, v in message.items() if v is not MISSING}


VALID_TRIGGER = json.loads(corpus("trigger", True)[0])


@st.composite
def trigger_messages(draw: st.DrawFn) -> Any:
    message = dict(VALID_TRIGGER)
    for key in draw(st.sets(st.sampled_from(sorted(VALID_TRIGGER)), max_size=3)):
        replacement = draw(maybe(st.one_of(numbers, labels, names,
                                           st.sampled_from(["firing", "resolved", "pending"]))))
        if replacement is MISSING:
            del message[key]
        else:
            message[key] = replacement
    return message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(metric_messages(), st.lists(metric_messages(), max_size=3)))
def test_metric_samples_agree(message: Any) -> None:
    """Random metric messages near the rules' edges: both sides give the same verdict."""
    raw = json.dumps(message).encode()
    assert struct_accepts("metric_sample", raw) == schema_accepts("metric_sample", raw), raw


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(stack_messages())
def test_stack_samples_agree(message: Any) -> None:
    """Random stack messages: both sides give the same verdict."""
    raw = json.dumps(message).encode()
    assert struct_accepts("stack_sample", raw) == schema_accepts("stack_sample", raw), raw


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(trigger_messages())
def test_triggers_agree(message: Any) -> None:
    """Valid triggers with random fields replaced or dropped: both sides give the same verdict."""
    raw = json.dumps(message).encode()
    assert struct_accepts("trigger", raw) == schema_accepts("trigger", raw), raw


class TestPythonApi:
    """Values only Python can hand over (NaN, infinity) are refused, as JSON cannot carry them."""

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite_value_is_refused(self, value: float) -> None:
        """metric_sample() refuses NaN and infinities with the field's name."""
        with pytest.raises(msgspec.ValidationError, match="value"):
            events.metric_sample("cpu.usage", value)

    def test_round_trip(self) -> None:
        """A sample encodes to the design's JSON and decodes back equal."""
        sample = events.metric_sample("cpu.usage", 93.5, 1763762400.25, {"host": "web-1"})
        raw = events.encoder.encode(sample)
        assert json.loads(raw) == {"name": "cpu.usage", "value": 93.5, "ts": 1763762400.25,
                                   "labels": {"host": "web-1"}}
        assert events.decode_metrics(raw) == [sample]

    def test_series_key_is_canonical(self) -> None:
        """Label order does not change a series' key; values are escaped."""
        a = events.series_key("m", {"b": "2", "a": 'x"y'})
        assert a == events.series_key("m", {"a": 'x"y', "b": "2"}) == 'm{a="x\\"y",b="2"}'
        assert events.series_key("m", {}) == "m"

    def test_shards_split_and_are_stable(self) -> None:
        """Every key lands on exactly one shard, the same one every time, and both get some."""
        keys = [events.series_key("m", {"i": str(i)}) for i in range(200)]
        owners = [events.shard_of(k, 2) for k in keys]
        assert owners == [events.shard_of(k, 2) for k in keys]
        assert set(owners) == {0, 1}
