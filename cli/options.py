"""Command-line options every role shares: the config file and how to reach NATS.

The flags map onto the config file's ``nats:`` section; ``settings(args)``
applies the precedence flags > ``FLAREBUS_*`` environment > file > defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flarebus.config import DEFAULT_NATS_URL, Config, load_config

#: Where a running `flarebus up` writes the URL of its embedded server.
UP_URL_FILE = Path(".flarebus") / "nats.url"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: ./flarebus.yaml when it exists)")


def add_nats_options(parser: argparse.ArgumentParser) -> None:
    """--nats URL and the authentication/TLS flags a real deployment needs."""
    add_config_option(parser)
    group = parser.add_argument_group("NATS connection")
    group.add_argument("--nats", metavar="URL", action="append",
                       help="server URL; repeat or comma-separate for a cluster "
                            f"(default: $FLAREBUS_NATS_URL, else {DEFAULT_NATS_URL})")
    group.add_argument("--nats-name", metavar="NAME", help="connection name shown by the server")
    group.add_argument("--user", help="user name ($FLAREBUS_NATS_USER)")
    group.add_argument("--password", help="password ($FLAREBUS_NATS_PASSWORD)")
    group.add_argument("--token", help="auth token ($FLAREBUS_NATS_TOKEN)")
    group.add_argument("--nkey", metavar="SEED_FILE",
                       help="NKey seed file ($FLAREBUS_NATS_NKEY_SEED)")
    group.add_argument("--creds", metavar="FILE", help="credentials file ($FLAREBUS_NATS_CREDS)")
    group.add_argument("--tls-ca", metavar="FILE", help="CA bundle to verify the server")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate")
    group.add_argument("--tls-key", metavar="FILE", help="client certificate's key")


def nats_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nats section the flags give (None where a flag was not given)."""
    servers = None
    if getattr(args, "nats", None):
        servers = [u.strip() for item in args.nats for u in item.split(",") if u.strip()]
    return {"servers": servers, "name": getattr(args, "nats_name", None),
            "user": getattr(args, "user", None), "password": getattr(args, "password", None),
            "token": getattr(args, "token", None), "nkey_seed": getattr(args, "nkey", None),
            "creds": getattr(args, "creds", None), "tls_ca": getattr(args, "tls_ca", None),
            "tls_cert": getattr(args, "tls_cert", None), "tls_key": getattr(args, "tls_key", None)}


def settings(args: argparse.Namespace, **sections: dict[str, Any]) -> Config:
    """The effective config for this command: flags over env over file over defaults.

    When no server URL is given anywhere, the URL of a `flarebus up` running in
    this directory is used (so `publish` and `tail` work against it without flags).
    """
    overrides: dict[str, Any] = {"nats": nats_overrides(args), **sections}
    config = load_config(getattr(args, "config", None), overrides=overrides)
    if not config.servers_given and UP_URL_FILE.is_file():
        url = UP_URL_FILE.read_text().strip()
        if url:
            config.nats.servers = [url]
    return config
