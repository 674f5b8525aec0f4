"""NATS server URLs as users write them: the default, and what makes one well-formed.

Kept apart from config.py (which needs msgspec) because the command line
shows the default in ``--help`` and checks each ``--nats`` value while
parsing, and neither may pay for the config machinery. Accepted are the forms
nats-py connects to: ``nats://``, ``tls://``, ``ws://`` and ``wss://`` URLs, or
a bare ``host[:port]`` (nats-py reads it as ``nats://``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
SCHEMES = ("nats", "tls", "ws", "wss")
SERVER_HINT = "is not a NATS server URL (use nats://host:4222, tls://host:4222 or host:4222)"


def check_server_url(text: str) -> str:
    """``text`` stripped, when nats-py can connect to it; ValueError saying why otherwise."""
    url = text.strip()
    scheme, sep, _ = url.partition("://")
    if sep and scheme not in SCHEMES:
        raise ValueError(f"{text!r} {SERVER_HINT}: scheme {scheme!r} is not one of "
                         f"{', '.join(SCHEMES)}")
    try:
        parts = urlsplit(url if sep else f"nats://{url}")
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError:
        raise ValueError(f"{text!r} {SERVER_HINT}") from None
    websocket = parts.scheme in ("ws", "wss")  # may sit behind a proxy, under a path
    if not parts.hostname or port == 0 or (parts.path not in ("", "/") and not websocket):
        raise ValueError(f"{text!r} {SERVER_HINT}")
    return url
