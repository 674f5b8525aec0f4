"""Connection failures that say what they are, against real nats-servers that refuse us.

Three servers stand in for three mistakes: one that wants a token (or a user
and password), one that speaks TLS with a self-signed certificate made here
with openssl, one that knows a single NKey. Each failure must be its own one-line
message naming what to check; a one-shot command exits 1 at once, a
long-running role after ``PERMANENT_TRIES`` tries, the reason its last line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nkeys
import pytest

from flarebus.bus import PERMANENT_TRIES
from flarebus.nats_server import EmbeddedNats
from tests.support import run_flarebus

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def token_server() -> Iterator[EmbeddedNats]:
    with EmbeddedNats(extra_args=("--auth", TOKEN)) as server:
        yield server


@pytest.fixture(scope="module")
def user_server() -> Iterator[EmbeddedNats]:
    with EmbeddedNats(extra_args=("--user", "alice", "--pass", "right")) as server:
        yield server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate: tuple[Path, Path]) -> Iterator[EmbeddedNats]:
    cert, key = certificate
    with EmbeddedNats(extra_args=("--tlscert", str(cert), "--tlskey", str(key))) as server:
        yield server


def user_seed(path: Path) -> str:
    """Write a fresh NKey user seed to ``path``; return its public key."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.write_bytes(seed + b"\n")
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


@pytest.fixture(scope="module")
def nkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedNats, Path]]:
    where = tmp_path_factory.mktemp("nkey")
    seed = where / "user.nk"
    conf = where / "server.conf"
    conf.write_text(f"authorization {{ users = [ {{ nkey: {user_seed(seed)} }} ] }}\n")
    with EmbeddedNats(extra_args=("-c", str(conf))) as server:
        yield server, seed


def last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def refused_once(*args: str) -> str:
    """Run a one-shot command that must fail with one line and exit 1; that line."""
    done = run_flarebus(*args, timeout=30)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return last_line(done)


class TestAuthorization:
    """Credentials the server refuses: named as such, with the flags to check."""

    def test_wrong_token(self, token_server: EmbeddedNats) -> None:
        """publish with a wrong token: authorization failed, not "is the server running?"."""
        line = refused_once("publish", "cpu", "1", "--nats", token_server.url, "--token", "no")
        assert line.startswith(f"flarebus publish: NATS at {token_server.url}: authorization "
                               "failed (the server said: Authorization Violation); check the "
                               "credentials: --token"), line
        assert "server running" not in line

    def test_missing_token(self, token_server: EmbeddedNats) -> None:
        """No credentials at all for a server that wants some: the same message."""
        assert "authorization failed" in refused_once("status", "--nats", token_server.url)

    def test_wrong_password(self, user_server: EmbeddedNats) -> None:
        """tail with a wrong password: authorization failed, naming --user/--password."""
        line = refused_once("tail", "--nats", user_server.url, "--user", "alice",
                            "--password", "wrong")
        assert "authorization failed" in line and "--user/--password" in line, line

    def test_right_credentials(self, token_server: EmbeddedNats,
                               user_server: EmbeddedNats) -> None:
        """The right token or password connects (the servers do work)."""
        for args in (("--nats", token_server.url, "--token", TOKEN),
                     ("--nats", user_server.url, "--user", "alice", "--password", "right")):
            done = run_flarebus("publish", "cpu", "1", *args, timeout=30)
            assert done.returncode == 0, done.stderr


class TestTls:
    """A certificate the client cannot verify: a TLS message naming --tls-ca."""

    def test_unverified_certificate(self, tls_server: EmbeddedNats) -> None:
        """Without the CA: TLS handshake failed (self-signed), exit 1 at once."""
        line = refused_once("publish", "cpu", "1", "--nats", tls_server.url)
        assert line == (
            f"flarebus publish: NATS at {tls_server.url}: TLS handshake failed (certificate "
            "verify failed: self-signed certificate); check --tls-ca (the CA that signed the "
            "server's certificate), that the URL's host is a name the certificate was issued "
            "for, and --tls-cert/--tls-key if the server asks for a client certificate")

    def test_with_ca(self, tls_server: EmbeddedNats, certificate: tuple[Path, Path]) -> None:
        """With --tls-ca naming the certificate, the same command connects and publishes."""
        done = run_flarebus("publish", "cpu", "1", "--nats", tls_server.url,
                            "--tls-ca", str(certificate[0]), timeout=30)
        assert done.returncode == 0, done.stderr
        assert "WARNING" not in done.stderr, done.stderr


    def test_no_silent_plain_text(self, token_server: EmbeddedNats) -> None:
        """A tls:// URL to a server without TLS: refused, not connected in plain text."""
        url = token_server.url.replace("nats://", "tls://")
        line = refused_once("publish", "cpu", "1", "--nats", url, "--token", TOKEN)
        assert "TLS was asked for" in line and "refusing the plain-text connection" in line


class TestNoServer:
    """Nothing listening: the one failure that says to start a server."""

    def test_refused(self) -> None:
        """A closed port: cannot connect (Connection refused), is a server running?"""
        line = refused_once("publish", "cpu", "1", "--nats", "nats://127.0.0.1:1")
        assert line == (
            "flarebus publish: NATS at nats://127.0.0.1:1: cannot connect (Connection "
            "refused); is a server running at that address, and is the port reachable from "
            "here? (`flarebus nats` or `flarebus up` start one)")

    def test_debug_shows_traceback(self) -> None:
        """--debug: the same failure with its traceback."""
        done = run_flarebus("--debug", "publish", "cpu", "1", "--nats", "nats://127.0.0.1:1",
                            timeout=30)
        assert done.returncode == 1
        assert "Traceback" in done.stderr and "BusError" in done.stderr, done.stderr


class TestNkeys:
    """--nkey against a server that knows one NKey; seed files that cannot work."""

    def test_known_nkey(self, nkey_server: tuple[EmbeddedNats, Path]) -> None:
        """The server's NKey seed connects."""
        server, seed = nkey_server
        done = run_flarebus("publish", "cpu", "1", "--nats", server.url, "--nkey", str(seed),
                            timeout=30)
        assert done.returncode == 0, done.stderr

    def test_unknown_nkey(self, nkey_server: tuple[EmbeddedNats, Path], tmp_path: Path) -> None:
        """A valid seed the server does not know: authorization failed."""
        server, _ = nkey_server
        other = tmp_path / "other.nk"
        user_seed(other)
        line = refused_once("publish", "cpu", "1", "--nats", server.url, "--nkey", str(other))
        assert "authorization failed" in line, line

    def test_bad_seed_file(self, nkey_server: tuple[EmbeddedNats, Path], tmp_path: Path) -> None:
        """A file that is no seed: named before any connection is tried."""
        server, _ = nkey_server
        bad = tmp_path / "bad.nk"
        bad.write_text("SUnot-a-seed\n")
        line = refused_once("publish", "cpu", "1", "--nats", server.url, "--nkey", str(bad))
        assert f"--nkey {bad}: not an NKey seed" in line, line

    def test_bad_creds_file(self, tmp_path: Path) -> None:
        """A creds file without a JWT and seed: named as such."""
        creds = tmp_path / "user.creds"
        creds.write_text("hello\n")
        line = refused_once("publish", "cpu", "1", "--creds", str(creds))
        assert f"--creds {creds}: not a NATS credentials file" in line, line


class TestLongRunning:
    """Roles that wait for their server give up on a permanent failure, exit 1."""

    @pytest.mark.parametrize("role", [
        ("worker",), ("engine", "--rules", "rules/examples"), ("sample", "system"),
        ("up", "--rules", "rules/examples")])
    def test_wrong_token(self, role: tuple[str, ...], token_server: EmbeddedNats,
                         tmp_path: Path) -> None:
        """After PERMANENT_TRIES tries, the reason is the last line and the exit code 1."""
        extra = ("--data-dir", str(tmp_path)) if role[0] == "up" else ()
        done = run_flarebus(*role, *extra, "--nats", token_server.url, "--token", "wrong",
                            timeout=60)
        assert done.returncode == 1, done.stderr
        assert last_line(done).startswith(f"flarebus {role[0]}: NATS at {token_server.url}: "
                                          "authorization failed"), done.stderr
        retries = [line for line in done.stderr.splitlines() if "retrying in" in line]
        assert len(retries) == PERMANENT_TRIES - 1, done.stderr
        assert "Traceback" not in done.stderr
