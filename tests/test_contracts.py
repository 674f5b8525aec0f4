"""The Structs and the JSON Schemas of schemas/ (generated from them) accept the same input.

Messages: the decoders of flarebus/events.py. Rule and config files: the loaders
(msgspec, flarebus.typed) against schemas/rule.schema.json and config.schema.json.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flarebus import events, schemas, typed
from flarebus.config import ConfigFile
from flarebus.durations import ORDERED_DURATION_PATTERN, ZERO_DURATION_PATTERN, parse_duration
from flarebus.engine.language.rulefile import load_rules_text
from flarebus.engine.language.ruleformat import RuleFile, shape_issues
from flarebus.errors import InvalidFileError

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


@cache
def validator(schema_name: str) -> jsonschema.protocols.Validator:
    """The Draft 2020-12 validator of ``schemas/<schema_name>.schema.json``, built once."""
    schema = schemas.load(schema_name)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def schema_accepts(kind: str, raw: bytes) -> bool:
    return validator(kind).is_valid(json.loads(raw))


def corpus(kind: str, valid: bool | str) -> list[bytes]:
    verdict = valid if isinstance(valid, str) else "valid" if valid else "invalid"
    path = CORPUS / f"{kind}.{verdict}.jsonl"
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
              "ts": draw(maybe(numbers)), "labels": draw(maybe(labels)),
              "stale": draw(maybe(json_scalars))}
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

    @given(st.text())
    def test_series_key_quotes_values_as_json_does(self, value: str) -> None:
        """The label values of a series key are msgspec's JSON strings, whatever they hold."""
        try:
            expected = events.encoder.encode(value).decode()
        except UnicodeEncodeError:  # lone surrogates: no key either way
            return
        assert events.series_key("m", {"a": value}) == f"m{{a={expected}}}"

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


# ------------------------------------------------- rule and config files: loader vs schema


def rule_loader_accepts(raw: bytes) -> bool:
    try:
        load_rules_text(raw.decode(), "corpus.yaml")
    except InvalidFileError:
        return False
    return True


def config_loader_accepts(raw: bytes) -> bool:
    return typed.decode(json.loads(raw), ConfigFile)[0] is not None


LOADERS = {"rule": rule_loader_accepts, "config": config_loader_accepts}
FILE_CASES = [(kind, valid, raw) for kind in LOADERS for valid in (True, False)
              for raw in corpus(kind, valid)]


@pytest.mark.parametrize(("kind", "valid", "raw"), FILE_CASES,
                         ids=[f"{k}-{'ok' if v else 'bad'}-{i}" for i, (k, v, _) in
                              enumerate(FILE_CASES)])
def test_files_are_judged_alike(kind: str, valid: bool, raw: bytes) -> None:
    """Every rule and config corpus file is accepted (or rejected) by the loader and the schema."""
    assert LOADERS[kind](raw) is valid, raw
    assert schema_accepts(kind, raw) is valid, raw


@pytest.mark.parametrize("raw", corpus("rule", "semantic"))
def test_rule_checks_past_the_schema(raw: bytes) -> None:
    """What JSON Schema cannot say (overlaps, regexes, templates, 1e999, duplicates): the
    schema accepts the file, the loader refuses it."""
    assert schema_accepts("rule", raw) and not rule_loader_accepts(raw), raw


def rule_types_accept(data: Any) -> bool:
    """The rule file's types and shape, without the checks past the schema."""
    if typed.decode(data, RuleFile)[0] is None:
        return False
    return not any(shape_issues(item, ()) for item in data["rules"])


def pick(good: tuple[Any, ...], bad: tuple[Any, ...] = ()) -> st.SearchStrategy[Any]:
    """A good value mostly, a bad one now and then (so whole files are valid often enough)."""
    if not bad:
        return st.sampled_from(good)
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(bad if n == 0 else good))


# Good and bad values for each key; none of them fails only a check past the schema.
RULE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": pick(("r1", "high-cpu"), ("bad name", "", 3, None)),
    "metric": pick(("cpu.usage", "m"), ("a..b", 3)),
    "stack": pick(({"source": "api", "frame": "db*"}, {"source": "a", "frame": "~x"}),
                  ({"source": "api"}, "api", {"source": "a.b", "frame": "x"},
                   {"source": "api", "frame": "x", "measure": "bogus"})),
    "when": pick(("> 80", "<=0.5", " != 0 ", "> 80\n"), ("above", 80, None)),
    "clear": pick(("< 10",), ("<", 10, None)),
    "for": pick(("30s", "1m30s", "0", "500ms", "1.5h"), ("30 sec", "1s1m", 30, "", "1m1m")),
    "keep_firing_for": pick(("0s", "5m"), ([1],)),
    "repeat": pick(("10m",), ("0s", "0.0m", "1s1m", "", None)),
    "reduce": pick(({"fn": "avg", "over": "1m"},),
                   ({"fn": "median", "over": "1m"}, {"fn": "avg", "over": "0s"}, {"fn": "avg"},
                    {"fn": "p99", "over": "1m", "x": 1})),
    "missing": pick(({"after": "5m", "then": "keep"}, {}),
                    ({"then": "ignore"}, {"after": "0s"}, {"afterr": "1m"}, "5m")),
    "labels": pick(({"host": "web"}, {"host": None}, {}), ({"1h": "x"}, {"host": 3}, [])),
    "actions": pick((["log"], [{"plugin": "http", "config": {"u": 1}}]),
                    ([""], [3], [{"config": {}}], "log", [{"plugin": "x", "config": 3}])),
    "escalate": pick(([{"when": "> 95"}], []),
                     ([{"for": "1m"}], [{"when": "> 95", "severity": ""}],
                      [{"when": "> 95", "bogus": 1}], [{"when": "> 95", "actions": "log"}])),
    "severity": pick(("critical",), ("", 3)),
    "enabled": pick((True, False), ("yes", None)),
    "add_labels": pick(({"team": "web"},), ({"team": 3}, {"-x": "y"})),
    "annotations": pick(({"summary": "x"},), ({"summary": 3},)),
    "claer": pick(("< 70",)),
}
CONFIG_VALUES: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "nats": {"servers": pick(("nats://x:1", ["nats://a:1", "nats://b:2"]), ([], [""], 3)),
             "user": pick(("u", None), (3,)), "tls_handshake_first": pick((True,), ("true",)),
             "connect_timeout": pick(("2s",), (2, "1s1m")), "sevrers": pick(("x",))},
    "engine": {"shard": pick(("0/2",), ("3", "1/0", 3)), "metrics_prefix": pick(("m",), ("a.b",)),
               "pending_msgs_limit": pick((1,), (0, "1")), "rules": pick((["a"],), ("a", [3]))},
    "worker": {"concurrency": pick((1, 16), (0, "8", True, 1.5)),
               "timeout": pick(("30s",), (30, "0x")), "plugin_dir": pick(("/p", None))},
    "telemetry": {"exporter": pick(("otlp", "none"), ("jaeger", None))},
}


@st.composite
def rule_documents(draw: st.DrawFn) -> Any:
    rules = []
    for _ in range(draw(st.integers(0, 2))):
        keys = draw(st.sets(st.sampled_from(sorted(set(RULE_VALUES) - {"claer", "stack"})),
                            max_size=6))
        keys |= {key for key in ("name", "when", "metric") if draw(st.integers(0, 19))}
        keys |= {key for key in ("stack", "claer") if not draw(st.integers(0, 9))}
        rules.append({key: draw(RULE_VALUES[key]) for key in sorted(keys)})
    return {"rules": rules} if draw(st.integers(0, 19)) else {"rules": rules, "groups": []}


@st.composite
def config_documents(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {}
    for section in draw(st.sets(st.sampled_from(sorted(CONFIG_VALUES)), max_size=3)):
        keys = draw(st.sets(st.sampled_from(sorted(CONFIG_VALUES[section])), max_size=3))
        doc[section] = {key: draw(CONFIG_VALUES[section][key]) for key in keys}
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rule_documents())
def test_rule_files_agree(document: Any) -> None:
    """Random rule files near the edges: the schema and the loader's types agree."""
    assert rule_types_accept(document) == validator("rule").is_valid(document), document


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(config_documents())
def test_config_files_agree(document: Any) -> None:
    """Random config files: the schema and the config's Structs agree."""
    decoded = typed.decode(document, ConfigFile)[0] is not None
    assert decoded == validator("config").is_valid(document), document


@settings(max_examples=500)
@given(st.text(alphabet="0123456789.mshdw", max_size=9))
def test_duration_patterns_say_what_the_parser_does(text: str) -> None:
    """The schema's one-regex durations (units largest first) are exactly what parses."""
    try:
        seconds: float | None = parse_duration(text)
    except ValueError:
        seconds = None
    assert (re.match(ORDERED_DURATION_PATTERN, text) is not None) == (seconds is not None)
    if seconds is not None:
        assert (re.match(ZERO_DURATION_PATTERN, text) is not None) == (seconds == 0)


@pytest.mark.parametrize("valid", [True, False])
def test_engine_decoding_judges_the_metric_corpus_like_metric_sample(valid: bool) -> None:
    """WireSample plus check_wire accepts exactly what MetricSample does, encoded alike."""
    for raw in corpus("metric_sample", valid):
        try:
            decoded = events.wire_decoder.decode(raw)
        except msgspec.DecodeError:
            accepted = False
        else:
            samples = decoded if isinstance(decoded, list) else [decoded]
            accepted = bool(samples) and all(  # each sample under its own subject
                events.check_wire([s], s.name) is None for s in samples)
            if accepted:
                assert events.encoder.encode(decoded) == events.encoder.encode(
                    events.metric_decoder.decode(raw)), raw
        assert accepted is struct_accepts("metric_sample", raw) or raw.strip() == b"[]", raw
