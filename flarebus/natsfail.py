"""Why a NATS connection failed, in words that say what to check.

nats-py reports every failed first connect as ``NoServersError`` ("no servers
available for connection") and hands the real cause to the error callback:
the server's ``-ERR 'Authorization Violation'``, an ``ssl.SSLError``, a refused
TCP connection. A wrong token then read "is the server running?", and a bad
certificate made nats-py retry the handshake forever. ``explain`` turns the
cause into a :class:`~flarebus.errors.BusError` whose ``kind`` separates what
waiting can fix (no server yet) from what it cannot (credentials, TLS), and
``check_credentials`` reads a seed or creds file before any connection, so a
missing or malformed one is named as such instead of a ModuleNotFoundError or a
silent authorization failure.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from flarebus.config import NatsSettings
from flarebus.errors import BusError, describe

AUTH_HINT = ("check the credentials: --token, --user/--password, --nkey or --creds "
             "(or FLAREBUS_NATS_TOKEN, _USER, _PASSWORD, _NKEY_SEED, _CREDS, or the config "
             "file's nats: section) against the server's authorization settings")
TLS_HINT = ("check --tls-ca (the CA that signed the server's certificate), that the URL's "
            "host is a name the certificate was issued for, and --tls-cert/--tls-key if the "
            "server asks for a client certificate")
UNREACHABLE_HINT = ("is a server running at that address, and is the port reachable from "
                    "here? (`flarebus nats` or `flarebus up` start one)")
#: What the server's -ERR says when it refuses a client's credentials (Authorization
#: Violation, User/Account Authentication Expired, Authentication Timeout).
_AUTH_WORDS = ("authorization", "authentication")


def is_auth_error(exc: BaseException) -> bool:
    return any(word in str(exc).lower() for word in _AUTH_WORDS)


def is_tls_error(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLError) or "tls" in str(exc).lower()


def is_permanent(exc: BaseException) -> bool:
    """A failure retrying cannot fix (nats-py would otherwise retry it as if unreachable)."""
    return is_auth_error(exc) or is_tls_error(exc)


def wants_tls(settings: NatsSettings) -> bool:
    """TLS was asked for: a ``tls://`` URL, a CA or a client certificate."""
    return bool(settings.tls_ca or settings.tls_cert) or any(
        url.startswith("tls://") for url in settings.servers)


def is_plaintext(nc: Any) -> bool:
    """The connection is up without TLS (nats-py's TCP transport, looked into).

    nats-py connects a ``tls://`` URL in plain text when the server does not
    offer TLS; asking for TLS and silently not getting it would hand the
    credentials and every sample to whoever is in between.
    """
    writer = getattr(getattr(nc, "_transport", None), "_io_writer", None)
    if writer is None or not hasattr(writer, "get_extra_info"):
        return False  # another transport (websocket): nothing to look at
    return writer.get_extra_info("ssl_object") is None


def plaintext_refused(settings: NatsSettings) -> BusError:
    return BusError(list(settings.servers),
                    "TLS was asked for (a tls:// URL, --tls-ca or --tls-cert) but the server "
                    "does not offer it: refusing the plain-text connection; check the "
                    "server's tls settings, or use a nats:// URL without the TLS flags",
                    kind="tls")


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return describe(exc)


def explain(settings: NatsSettings, causes: list[BaseException],
            final: BaseException) -> BusError:
    """The BusError for a failed connect: the most telling of ``causes``, else ``final``."""
    servers = list(settings.servers)
    for exc in causes:
        if is_auth_error(exc):
            said = str(exc).removeprefix("nats: ").strip("'\" ")
            return BusError(servers, f"authorization failed (the server said: {said}); "
                                     f"{AUTH_HINT}", kind="auth")
    for exc in causes:
        if is_tls_error(exc):
            return BusError(servers, f"TLS handshake failed ({_tls_reason(exc)}); {TLS_HINT}",
                            kind="tls")
    last = causes[-1] if causes else final
    reason = os.strerror(last.errno) if isinstance(last, OSError) and last.errno else describe(last)
    return BusError(servers, f"cannot connect ({reason}); {UNREACHABLE_HINT}")


def check_credentials(settings: NatsSettings) -> None:
    """BusError(kind="credentials") for an NKey seed or creds file that cannot be used."""
    servers = list(settings.servers)
    for flag, path in (("--nkey", settings.nkey_seed), ("--creds", settings.creds)):
        if not path:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise BusError(servers, f"{flag} {path}: cannot read: {exc.strerror}",
                           kind="credentials") from None
        if flag == "--nkey":
            _check_seed(servers, path, text.strip())
        elif "-----BEGIN NATS USER JWT-----" not in text or "SEED-----" not in text:
            raise BusError(servers, f"--creds {path}: not a NATS credentials file (it holds a "
                                    "user JWT and an NKey seed, as `nsc generate creds` "
                                    "writes)", kind="credentials")


def _check_seed(servers: list[str], path: str, seed: str) -> None:
    import nkeys  # nats-py[nkeys]: only where NKeys are used

    try:
        nkeys.from_seed(bytearray(seed.encode())).wipe()
    except Exception as exc:  # nkeys raises its own errors, binascii's, or ValueError
        raise BusError(servers, f"--nkey {path}: not an NKey seed ({describe(exc)}); the file "
                                "holds one line starting with SU (a user seed, as `nk -gen "
                                "user` writes)", kind="credentials") from None
