"""Command-line options every role shares, and the types that check flag values while parsing.

The connection flags map onto the config file's ``nats:`` section;
``settings(args)`` applies the precedence flags > ``FLAREBUS_*`` environment >
file > defaults.

Each flag's value is checked by its argparse ``type=`` function, so a bad one
(``--shard 3/2``, ``--since 10 minutes``, ``-l host``) is a usage error: the
command's usage line, argparse's message naming the flag, exit code 2, before
anything connects or starts. This module imports only the standard library and
flarebus' light modules: every subcommand's parser is built from it for
``flarebus --help``, which must start in a few milliseconds.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flarebus.durations import parse_duration
from flarebus.servers import DEFAULT_NATS_URL, check_server_url

if TYPE_CHECKING:
    import asyncio

    from flarebus.config import Config

#: Where `flarebus up` and `flarebus nats` keep their data, unless --data-dir or this says.
DATA_DIR_ENV = "FLAREBUS_DATA_DIR"
DEFAULT_DATA_DIR = Path(".flarebus")
#: The file in the data dir where a running `flarebus up` (or `nats`) writes its server's URL.
URL_FILE_NAME = "nats.url"
UP_URL_FILE = DEFAULT_DATA_DIR / URL_FILE_NAME


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; a flag's default shown unless its help says it.

    A default of None (or False, or an empty list) means "not given: the config
    file or the environment decides", which the flag's help explains instead.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None
                or action.default is argparse.SUPPRESS or action.default in (False, [])):
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """Every subcommand's parser; arguments that need a role's modules can come later.

    ``flarebus --help`` builds every subcommand's parser; a flag whose definition
    needs a role's modules (the built-in samplers' options, the flamegraph
    formats) is added by ``add_later``, when its command is the one being parsed.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)
        self._later: list[Callable[[argparse.ArgumentParser], None]] = []

    def add_later(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._later.append(add)

    def complete(self) -> CommandParser:
        """Add the arguments left for later now (parsing does it; so may a test)."""
        while self._later:
            self._later.pop(0)(self)
        return self

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        self.complete()
        return super().parse_known_args(args, namespace)


def add_later(parser: argparse.ArgumentParser,
              add: Callable[[argparse.ArgumentParser], None]) -> None:
    """Run ``add(parser)`` when ``parser``'s command is parsed (at once for another parser)."""
    if isinstance(parser, CommandParser):
        parser.add_later(add)
    else:
        add(parser)


# --- flag value types: each raises ArgumentTypeError with the message argparse prints ---

def duration(text: str) -> float:
    """Seconds: a duration (``30s``, ``1m30s``, ``500ms``) or a plain number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration is a number of seconds >= 0 "
                                         "or like 30s, 1m30s, 500ms")
    return seconds


def interval(text: str) -> float:
    """A duration that must be more than 0 (how often something runs, how long it records)."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return seconds


def positive_int(text: str) -> int:
    """A count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def timestamp(text: str) -> float:
    """Unix seconds (finite, >= 0)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not Unix seconds (e.g. 1763762400.25)")
    return value


def port(text: str) -> int:
    """A TCP port, or -1 for "any free one"."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value != -1 and not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1..65535, or -1 for any)")
    return value


def label(text: str) -> tuple[str, str]:
    """``KEY=VALUE``, the key a valid label name; use as ``type=label, action="append"``."""
    from flarebus.events import LABEL_NAME_HINT, is_label_name

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: use KEY=VALUE")
    if not is_label_name(key):
        raise argparse.ArgumentTypeError(f"{text!r}: {key!r} {LABEL_NAME_HINT}")
    return key, value


def token(text: str) -> str:
    """A single subject token (a rule name, a stack source)."""
    from flarebus.events import TOKEN_HINT, is_token

    if not is_token(text):
        raise argparse.ArgumentTypeError(f"{text!r} {TOKEN_HINT}")
    return text


def shard(text: str) -> str:
    """``i/N`` with 0 <= i < N, kept as text (it is the ``engine.shard`` setting)."""
    from flarebus.engine.service.shard import Shard

    try:
        return str(Shard.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def existing_file(text: str) -> str:
    """The path of a file that is there (a config file, a key, a certificate, an input)."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(
            f"{text!r}: {'a directory, not a file' if path.is_dir() else 'no such file'}")
    return text


def servers(text: str) -> list[str]:
    """One ``--nats`` value: a server URL, or several comma-separated."""
    urls = [u for u in (part.strip() for part in text.split(",")) if u]
    if not urls:
        raise argparse.ArgumentTypeError(f"{text!r}: give a server URL, e.g. {DEFAULT_NATS_URL}")
    try:
        return [check_server_url(u) for u in urls]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --- the options every role shares ---

def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", type=existing_file,
                        help="config file (default: ./flarebus.yaml when it exists)")


def add_data_dir_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                        what: str) -> None:
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help=f"{what} (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})")


def data_dir(args: argparse.Namespace) -> Path:
    """The data dir: --data-dir, else $FLAREBUS_DATA_DIR, else ./.flarebus.

    Every command takes it, so `flarebus up --data-dir X` is found by `flarebus
    publish --data-dir X` (or by both under FLAREBUS_DATA_DIR=X).
    """
    given: Path | None = getattr(args, "data_dir", None)
    return given or Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def add_nats_options(parser: argparse.ArgumentParser, *,
                     data_dir_help: str = "where to find the URL of the `flarebus up` or "
                                          "`flarebus nats` to connect to") -> None:
    """--nats URL and the authentication/TLS flags a real deployment needs."""
    add_config_option(parser)
    group = parser.add_argument_group("NATS connection")
    add_data_dir_option(group, data_dir_help)
    group.add_argument("--nats", metavar="URL", action="extend", type=servers,
                       help="server URL; repeat or comma-separate for a cluster (default: "
                            "$FLAREBUS_NATS_URL, else nats.servers of the config file, else "
                            f"the `flarebus up` of --data-dir, else {DEFAULT_NATS_URL})")
    group.add_argument("--nats-name", metavar="NAME", help="connection name shown by the server")
    group.add_argument("--user", help="user name ($FLAREBUS_NATS_USER)")
    group.add_argument("--password", help="password ($FLAREBUS_NATS_PASSWORD)")
    group.add_argument("--token", help="auth token ($FLAREBUS_NATS_TOKEN)")
    group.add_argument("--nkey", metavar="SEED_FILE", type=existing_file,
                       help="NKey seed file ($FLAREBUS_NATS_NKEY_SEED)")
    group.add_argument("--creds", metavar="FILE", type=existing_file,
                       help="credentials file ($FLAREBUS_NATS_CREDS)")
    group.add_argument("--tls-ca", metavar="FILE", type=existing_file,
                       help="CA bundle to verify the server")
    group.add_argument("--tls-cert", metavar="FILE", type=existing_file,
                       help="client certificate")
    group.add_argument("--tls-key", metavar="FILE", type=existing_file,
                       help="client certificate's key")


def nats_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The nats section the flags give (None where a flag was not given)."""
    return {"servers": getattr(args, "nats", None) or None,
            "name": getattr(args, "nats_name", None),
            "user": getattr(args, "user", None), "password": getattr(args, "password", None),
            "token": getattr(args, "token", None), "nkey_seed": getattr(args, "nkey", None),
            "creds": getattr(args, "creds", None), "tls_ca": getattr(args, "tls_ca", None),
            "tls_cert": getattr(args, "tls_cert", None), "tls_key": getattr(args, "tls_key", None)}


def settings(args: argparse.Namespace, **sections: dict[str, Any]) -> Config:
    """The effective config for this command: flags over env over file over defaults.

    When no server URL is given anywhere, the URL of a `flarebus up` running
    with this data dir is used (so `publish` and `tail` in the directory of a
    plain `flarebus up` work against it without flags).
    """
    from flarebus.config import load_config

    overrides: dict[str, Any] = {"nats": nats_overrides(args), **sections}
    config = load_config(getattr(args, "config", None), overrides=overrides)
    url_file = data_dir(args) / URL_FILE_NAME
    if not config.servers_given and url_file.is_file():
        url = url_file.read_text().strip()
        if url:
            config.nats.servers = [url]
    return config


def signal_events() -> tuple[asyncio.Event, asyncio.Event]:
    """(stop, reload) set by SIGTERM/SIGINT and SIGHUP: what every service command obeys."""
    import asyncio
    import signal

    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    return stop, reload
