"""bench/latency.py runs end to end and reports; no timing is asserted (figures vary by machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.latency_http import parse_notification
from tests.support import ROOT

ROW = re.compile(r"^\| flarebus, value pushed with `Publisher` \| (\d+)s \| 2 \| "
                 r"\d+\.\d+ s \(\d+\.\d+\u2013\d+\.\d+\) \|( \d+\.\d+ s \|){3}$", re.M)


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.latency", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


class TestRun:
    def test_pushed_quick_prints_a_table_with_numbers(self) -> None:
        """The pushed setup, two trials: a markdown row per `for`, every cell a number."""
        out = bench("--quick", "--trials", "2", "--only", "pushed")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "| path to a webhook notification" in out.stdout
        assert sorted(m.group(1) for m in ROW.finditer(out.stdout)) == ["0", "1"], out.stdout

    def test_prometheus_rows_are_skipped_without_the_binaries(self, tmp_path: Path) -> None:
        """Without prometheus/alertmanager on PATH: how to get them, and no table row."""
        out = bench("--only", "prometheus-tuned", env={"PATH": str(tmp_path)})
        assert out.returncode == 0, out.stdout + out.stderr
        assert "apt-get install prometheus prometheus-alertmanager" in out.stdout
        assert "| Prometheus" not in out.stdout


class TestReceiver:
    def test_alertmanager_webhook_is_attributed_per_alert_and_trial(self) -> None:
        """Each firing alert of an Alertmanager group counts for its own (alertname, trial)."""
        body = {"version": "4", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "LatencyFor0s", "trial": "3"},
             "startsAt": "2026-12-01T20:50:01.123456789Z"},
            {"status": "resolved", "labels": {"alertname": "LatencyFor0s", "trial": "4"},
             "startsAt": "2026-12-01T20:50:01Z"}]}
        notes = parse_notification(body, arrived=1.0)
        assert list(notes) == [("LatencyFor0s", "3")]
        assert notes["LatencyFor0s", "3"].fired == 1796158201.123456

    def test_flarebus_trigger_gives_its_rule_trial_and_instants(self) -> None:
        """A firing trigger of the http action: rule, trial label, `at` and `active_since`."""
        body = {"rule": "latency-for-0s", "state": "firing", "labels": {"trial": "1"},
                "at": 5.0, "active_since": 4.0}
        notes = parse_notification(body, arrived=6.0)
        assert notes == {("latency-for-0s", "1"): notes["latency-for-0s", "1"]}
        assert (notes["latency-for-0s", "1"].fired,
                notes["latency-for-0s", "1"].active_since) == (5.0, 4.0)
        assert parse_notification({**body, "state": "resolved"}, arrived=6.0) == {}
