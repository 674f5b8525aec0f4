"""docs/plugins.md's worked example, run as written: its tests, then a real worker running it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flarebus.nats_server import EmbeddedNats
from tests.plugin_pkg.harness import connect, fresh_stream, publish, trigger
from tests.plugin_pkg.harness import wait_until as wait
from tests.support import ROOT, run_flarebus, start_flarebus

DOC = ROOT / "docs" / "plugins.md"
#: The venv's editable install may predate the packages' __init__.py files (then `actions`
#: imports as a namespace package outside the checkout); the checkout first fixes that.
ENV = {"PYTHONPATH": str(ROOT)}
RUNNABLE = re.compile(r"<!-- runnable: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)\n```", re.S)


def runnable_blocks() -> dict[str, str]:
    """path -> text of every block marked `<!-- runnable: PATH -->` in the doc."""
    return {m["path"]: m["body"] + "\n" for m in RUNNABLE.finditer(DOC.read_text())}


@pytest.fixture
def example(tmp_path: Path) -> Path:
    for rel, text in runnable_blocks().items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_doc_has_the_marked_blocks() -> None:
    """The plugin, its test and the config are all marked runnable."""
    assert set(runnable_blocks()) == {"plugins/incident_log.py", "test_incident_log.py",
                                      "flarebus.yaml"}


def test_the_example_plugin_tests_pass(example: Path) -> None:
    """`pytest test_incident_log.py` from the doc passes."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "test_incident_log.py"], cwd=example, capture_output=True,
                            text=True, timeout=60, check=False, env={**os.environ, **ENV})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_flarebus_plugins_finds_the_example(example: Path) -> None:
    """`flarebus plugins --config flarebus.yaml` lists it from the plugin dir."""
    result = run_flarebus("plugins", "--config", "flarebus.yaml", cwd=example, env=ENV)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("incident_log"))
    assert line.split()[1:3] == ["action", "plugin"]


async def test_a_worker_runs_the_example_plugin(example: Path,
                                               private_nats: EmbeddedNats) -> None:
    """A real `flarebus worker --config flarebus.yaml` runs the plugin on a published trigger."""
    nc = await connect(private_nats.url)
    proc = start_flarebus("worker", "--nats", private_nats.url, "--config", "flarebus.yaml",
                          cwd=example, env=ENV)
    try:
        js = await fresh_stream(nc)
        fired = trigger("disk-full", actions=["incident_log"], metric_name="disk.used")
        await publish(js, [fired])
        log = example / "incidents.log"
        await wait(lambda: log.exists() and fired.id in log.read_text(), 30,
                   what="the incident line")
        assert log.read_text().startswith(f"{fired.id} disk-full disk.used=93.5 (> 80 for 31s)")
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
        await nc.close()
    assert proc.returncode == 0
