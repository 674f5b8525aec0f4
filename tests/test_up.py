"""`flarebus up` as a user runs it: from a clean directory, a default rule fires within a minute."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support import run_flarebus, start_flarebus


class Output:
    """Collects a process' stdout and stderr lines as they arrive."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear within {timeout}s:\n{self.text()}")


def family(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def stop(proc: subprocess.Popen[str], members: list[psutil.Process]) -> int:
    proc.send_signal(signal.SIGINT)
    code = proc.wait(30)
    _, alive = psutil.wait_procs(members, timeout=10)
    assert alive == [], f"left behind: {alive}"
    return code


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A clean directory with nothing of flarebus in it."""
    return tmp_path


def test_up_fires_a_default_rule_stops_cleanly_and_resumes(workdir: Path) -> None:
    """Within 60 s the heartbeat rule fires and the log action prints it; Ctrl-C exits 0 with
    nothing left running; a second `up` reuses the data dir and restores the engine state."""
    proc = start_flarebus("up", "--status-every", "2s", cwd=workdir)
    out = Output(proc)
    members: list[psutil.Process] = []
    try:
        out.wait_for(r"flarebus up\n\s+nats\s+nats://127\.0\.0\.1:\d+ \(embedded", 30)
        members = family(proc.pid)
        assert any("nats-server" in p.name() for p in members)
        out.wait_for(r"FIRING\s+flarebus-heartbeat \{host=", 60)
        out.wait_for(r"trigger rule=flarebus-heartbeat state=firing", 15)  # the log action ran
        out.wait_for(r"status\s+[\d.,]+ samples/s, \d+ series, \d+ pending, [1-9]\d* firing", 15)
        url = (workdir / ".flarebus" / "nats.url").read_text().strip()
        # a second terminal in the same directory needs no flags
        tail = run_flarebus("tail", "--all", "--json", "-n", "1", cwd=workdir, timeout=30)
        assert tail.returncode == 0, tail.stderr
        assert json.loads(tail.stdout.splitlines()[0])["rule"] == "flarebus-heartbeat"
        assert url.startswith("nats://127.0.0.1:")
    finally:
        code = stop(proc, members or family(proc.pid))
    assert code == 0, out.text()
    assert not (workdir / ".flarebus" / "nats.url").exists()

    again = start_flarebus("up", "--status-every", "0", cwd=workdir)
    second = Output(again)
    try:
        restored = second.wait_for(r"(\d+) state keys restored", 40)
        assert int(restored.group(1)) >= 1, second.text()
        assert (workdir / ".flarebus" / "nats" / "jetstream").is_dir()
    finally:
        assert stop(again, family(again.pid)) == 0, second.text()


def test_ctrl_c_in_a_terminal_stops_the_roles_before_the_server(workdir: Path) -> None:
    """Ctrl-C reaches the whole process group (the server too): the embedded server must
    outlive the roles' graceful stop, so nothing is left retrying a vanished server."""
    proc = start_flarebus("up", "--engines", "2", "--status-every", "0", cwd=workdir,
                          start_new_session=True)  # its own group, as a terminal's job
    out = Output(proc)
    try:
        out.wait_for(r"flarebus up\n\s+nats\s+nats://127\.0\.0\.1:\d+ \(embedded", 40)
        members = family(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
        code = proc.wait(60)
        _, alive = psutil.wait_procs(members, timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0 and alive == [], out.text()
    text = out.text()
    assert "nats-server stopped" in text
    assert not re.search(r"unexpected EOF|Connect call failed|could not release|"
                         r"checkpoint write .* failed", text), text


def test_up_help_teaches() -> None:
    """`flarebus up --help` says what runs and how to reach it from another terminal."""
    result = run_flarebus("up", "--help")
    assert result.returncode == 0
    assert "flarebus publish cpu.usage 93.5" in result.stdout and "--rules" in result.stdout


def test_data_dir_is_where_the_others_look(workdir: Path, tmp_path_factory: pytest.TempPathFactory
                                          ) -> None:
    """`up --data-dir X`: publish finds it with --data-dir X or FLAREBUS_DATA_DIR=X, anywhere."""
    data = workdir / "state"
    proc = start_flarebus("up", "--data-dir", str(data), "--no-sampler", "--status-every", "0",
                          cwd=workdir)
    out = Output(proc)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    try:
        out.wait_for(rf"with --data-dir {re.escape(str(data))} \(or FLAREBUS_DATA_DIR=", 30)
        url = (data / "nats.url").read_text().strip()
        by_flag = run_flarebus("publish", "x.y", "1", "--data-dir", str(data), cwd=elsewhere)
        by_env = run_flarebus("publish", "x.y", "2", cwd=elsewhere,
                              env={"FLAREBUS_DATA_DIR": str(data)})
        for done in (by_flag, by_env):
            assert done.returncode == 0, done.stderr
            assert f"published 1 sample(s) to {url}" in done.stderr
    finally:
        assert stop(proc, family(proc.pid)) == 0, out.text()
    assert not (workdir / ".flarebus").exists()


def test_ctrl_c_while_nats_is_unreachable_stops_at_once(workdir: Path) -> None:
    """With a dead --nats URL, `up` says so and retries; Ctrl-C ends it with exit 0."""
    proc = start_flarebus("up", "--nats", "nats://127.0.0.1:1", cwd=workdir)
    out = Output(proc)
    try:
        out.wait_for(r"cannot connect \(Connection refused\).*retrying in", 30)
    finally:
        code = stop(proc, family(proc.pid))
    assert code == 0, out.text()
    assert "stopped before the engine was ready" in out.text()
