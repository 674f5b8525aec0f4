"""Property-based fuzzing: every decoder and the rule loader fail only with their documented errors.

- wire decoders (flarebus.events, the engine's batch decoders): ``msgspec.DecodeError`` or
  ``msgspec.ValidationError`` (a ``__post_init__`` ValueError arrives as the latter);
  the engine's batch decoders raise nothing at all (they reject, with a reason);
- ``flarebus.typed.decode``: never raises; it returns the issues;
- the rule loader (``load_rules_text``): ``InvalidFileError`` only.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from flarebus import typed
from flarebus.config import ConfigFile
from flarebus.engine.language.rulefile import load_rules_text
from flarebus.engine.language.ruleformat import RuleFile
from flarebus.engine.service.decoding import decode_metric_batch, decode_stack_batch
from flarebus.errors import InvalidFileError
from flarebus.events import decode_metrics, decode_stacks, trigger_decoder
from flarebus.ingest_settings import InputLimits

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text(max_size=20))
#: Any JSON-like value, nested a few levels.
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
SAMPLE_KEYS = ["name", "value", "ts", "labels", "source", "stacks", "frames", "weight", "unit"]
#: Dicts with the samples' own keys: close enough to valid to reach the checks past parsing.
near_samples = st.dictionaries(st.sampled_from(SAMPLE_KEYS), values, max_size=6)
payloads = (st.binary(max_size=200)
            | near_samples.map(lambda d: json.dumps(d, allow_nan=True).encode())
            | st.lists(near_samples, max_size=3).map(lambda d: json.dumps(d).encode()))
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def as_msg(subject: str, data: bytes) -> Msg:
    return Msg(_client=None, subject=subject, data=data)  # type: ignore[arg-type]


class TestWireDecoders:
    """flarebus.events decoders and the engine's batch decoders on arbitrary bytes."""

    @FUZZ
    @given(payloads)
    def test_sample_and_trigger_decoders_raise_only_decode_errors(self, data: bytes) -> None:
        """decode_metrics, decode_stacks, trigger_decoder: a sample list, or a msgspec error."""
        for decode in (decode_metrics, decode_stacks, trigger_decoder.decode):
            with contextlib.suppress(*DECODE_ERRORS):
                decode(data)

    @FUZZ
    @given(st.lists(payloads, min_size=1, max_size=5),
           st.sampled_from(["cpu.usage", "a", "x-y", "..", "api"]))
    def test_batch_decoders_never_raise_and_account_for_every_message(
            self, datas: list[bytes], tail: str) -> None:
        """Each message is either decoded or rejected with a reason; nothing raises."""
        limits = InputLimits(max_message_bytes=150, max_labels=2, max_label_value_length=5)
        for prefix, decode in (("metrics", decode_metric_batch), ("stacks", decode_stack_batch)):
            msgs = [as_msg(f"{prefix}.{tail}", d) for d in datas]
            decoded = decode(msgs, len(prefix) + 1, limits=limits)
            kept = sum(len(s.samples) for s in decoded.segments)
            assert kept == decoded.samples
            assert len(decoded.rejected) <= len(msgs)
            assert all(r.reason and r.detail for r in decoded.rejected)


class TestTypedDecode:
    """flarebus.typed.decode returns issues for anything; it never raises."""

    @FUZZ
    @given(values)
    def test_config_and_rule_files_of_any_shape(self, value: Any) -> None:
        """Any JSON-like document as a config file and as a rule file: a value or issues."""
        for tp in (ConfigFile, RuleFile):
            decoded, issues = typed.decode(value, tp)
            assert (decoded is None) == bool(issues)
            assert all(i.message for i in issues)


RULE_KEYS = ["name", "metric", "when", "for", "clear", "keep_firing_for", "labels", "reduce",
             "missing", "repeat", "severity", "add_labels", "annotations", "actions", "escalate",
             "stack", "enabled"]
rule_values = (values | st.sampled_from(["> 80", "< 5", "5m", "1s", "0s", "{value:.1f}",
                                         "{labels[host]}", "cpu.usage", "log", "~"]))
rules_docs = st.dictionaries(st.sampled_from(RULE_KEYS), rule_values, max_size=8)


class TestRuleLoader:
    """The rule loader on arbitrary text and on generated rule files."""

    @FUZZ
    @given(st.text(max_size=300))
    def test_arbitrary_text_fails_only_as_invalid_file(self, text: str) -> None:
        """Any text: a rule set, or InvalidFileError with problems."""
        try:
            load_rules_text(text)
        except InvalidFileError as exc:
            assert exc.problems

    @FUZZ
    @given(st.lists(rules_docs, max_size=3))
    def test_generated_rule_files_fail_only_as_invalid_file(self, rules: list[Any]) -> None:
        """YAML of rule-shaped mappings: a rule set, or InvalidFileError with problems."""
        try:
            text = yaml.safe_dump({"rules": rules}, allow_unicode=True)
        except yaml.YAMLError:
            return
        try:
            load_rules_text(text)
        except InvalidFileError as exc:
            assert exc.problems
