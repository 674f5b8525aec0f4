"""What the engine writes (triggers, its status summary) fits the server's max_payload."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flarebus.engine.service.fit import TRUNCATED_ANNOTATION, fit_trigger
from flarebus.engine.service.summary import encode_fitting
from flarebus.events import Trigger, encoder, trigger_decoder
from flarebus.publish import Publisher
from flarebus.summary import EngineSummary, RuleInfo, SeriesInfo, summary_decoder
from tests.engine_support import wait_summary, wait_triggers
from tests.fault_support import engine_on_own_server
from tests.test_engine import rule, rule_file


def big_summary(series: int, label_bytes: int) -> EngineSummary:
    labels = {f"l{i}": "v" * label_bytes for i in range(10)}
    return EngineSummary(
        shard="0/1", host="h", pid=1, started_at=0.0, updated_at=1.0, rule_files=["r.yaml"],
        rules=[RuleInfo(name="r")], series=series, pending=0, firing=series,
        states=[SeriesInfo(rule="r", series=f"s{i}", state="firing", labels=labels)
                for i in range(series)])


def trigger(annotation: str, label: str = "a") -> Trigger:
    return Trigger(id="t1", rule="r", state="firing", severity="warning", metric_name="m",
                   value=1.0, threshold="> 0", duration=0.0, labels={"host": label},
                   annotations={"summary": annotation}, active_since=1.0, at=1.0, actions=[])


class TestFitting:
    """Cutting only what does not fit, and saying so."""

    def test_summary_lists_fewer_series_to_fit(self) -> None:
        """1000 firing series with 10 KB of labels each: encoded under 1 MiB, marked truncated."""
        data = encode_fitting(big_summary(1000, 1000), 1 << 20)
        assert len(data) < 1 << 20
        decoded = summary_decoder.decode(data)
        assert decoded.truncated and 0 < len(decoded.states) < 1000
        assert decoded.firing == 1000  # the counts stay whole

    def test_a_small_summary_is_untouched(self) -> None:
        """Under the budget nothing is cut."""
        decoded = summary_decoder.decode(encode_fitting(big_summary(3, 10), 1 << 20))
        assert not decoded.truncated and len(decoded.states) == 3

    @pytest.mark.parametrize("size", [2_000_000, 60_000])
    def test_trigger_annotations_are_cut_and_flagged(self, size: int) -> None:
        """An annotation past max_payload is cut; the trigger says its original size; id kept."""
        t = trigger("x" * size, label="y" * 50_000)
        payload = encoder.encode(t)
        fitted = fit_trigger(t, payload, 64 * 1024)
        assert len(fitted) < 64 * 1024
        decoded = trigger_decoder.decode(fitted)
        assert decoded.annotations[TRUNCATED_ANNOTATION] == str(len(payload))
        assert decoded.id == "t1" and decoded.state == "firing"

    def test_a_trigger_that_fits_is_the_same_bytes(self) -> None:
        """Under the budget the payload is passed through unchanged."""
        payload = encoder.encode(trigger("fine"))
        assert fit_trigger(trigger("fine"), payload, 1 << 20) is payload


class TestSmallMaxPayload:
    """A server with a 64 KB max_payload: the engine's writes still get through."""

    async def test_huge_annotation_and_wide_series_still_publish_and_report(
            self, tmp_path: Path) -> None:
        """120 KB of templated annotations publish cut; 40 wide firing series: status written."""
        conf = tmp_path / "small.conf"
        conf.write_text("max_payload: 65536\n")
        rules = rule_file(tmp_path / "r.yaml",
                          rule("wide", "wide.cpu", extra="    annotations:\n" + "".join(
                              f"      part{i}: \"{{value:>250}}{'x' * 30_000}\"\n"
                              for i in range(4))))  # 120 KB of annotations, 64 KB max_payload
        async with engine_on_own_server(tmp_path, rules,
                                        server_args=("-c", str(conf))) as (engine, nc, _):
            pub = Publisher(nc)
            labels = {f"l{i}": "v" * 200 for i in range(10)}
            for i in range(40):
                await pub.sample("wide.cpu", 99, time.time(), series=f"s{i}", **labels)
            await pub.close()
            got = await wait_triggers(nc, "triggers.wide", 40, timeout=30)
            cut = [t for t in got if TRUNCATED_ANNOTATION in t.annotations]
            assert len(cut) == 40, f"{len(cut)} of {len(got)} triggers cut"
            summary = await wait_summary(nc, lambda s: s.firing == 40)
            assert summary.truncated and len(summary.states) < 40
            failed = [x for x in engine.lines if "failed" in x]
            assert not failed, failed
