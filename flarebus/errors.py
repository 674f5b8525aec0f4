"""Every exception flarebus raises on purpose, each carrying structured data.

Callers branch on the type and read the fields; the message is for people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def describe(exc: BaseException) -> str:
    """An exception as one line: its type, and its message when it has one.

    ``f"{exc}"`` alone is empty for many exceptions (a bare ``TimeoutError``,
    nats-py's connection errors), which made log lines end in "failed:".
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class FlarebusError(Exception):
    """Base class of flarebus' own errors."""


@dataclass(eq=False)
class UsageError(FlarebusError):
    """A command line that is wrong as a whole (flags that go together, a missing argument).

    What one flag's value gets wrong is caught while parsing; this is for what
    only the command sees. The CLI reports both alike: usage, message, exit 2.
    """

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one input file, at one place in it.

    ``str()`` gives the compiler-style line flarebus prints:
    ``rules/cpu.yaml:14:11: rule 'high-cpu': for: "30 sec" is not a duration``.
    """

    file: str
    line: int
    column: int
    message: str
    rule: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: "
        who = f"rule {self.rule!r}: " if self.rule else ""
        return f"{where}{who}{self.message}"


@dataclass(eq=False)
class InvalidFileError(FlarebusError):
    """A rule, config or test file (or a set of them) is invalid; ``problems`` lists why."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class ConfigError(InvalidFileError):
    """The config file, or a setting from flags or environment, is invalid."""


@dataclass(eq=False)
class SampleError(FlarebusError):
    """Input that is not a valid sample: which input, which field and why."""

    reason: str
    line: int | None = None
    source: str = "<input>"

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: " if self.line is not None else ""
        return f"{where}{self.reason}"


@dataclass(eq=False)
class TargetDown(SampleError):
    """A scrape target did not answer (or not with metrics): its series ended with it.

    ``markers`` are the staleness markers of every series the target had, as
    Prometheus writes them when a scrape fails: the sampler runtime publishes
    them before it counts the failure and backs off, so rules on those series
    resolve at once instead of when ``missing.after`` runs out.
    """

    markers: Sequence[Any] = ()


@dataclass(eq=False)
class NatsServerError(FlarebusError):
    """The embedded nats-server could not be found, started or reached."""

    message: str
    log_tail: str = ""

    def __str__(self) -> str:
        return f"{self.message}\n{self.log_tail}".rstrip()


@dataclass(eq=False)
class BusError(FlarebusError):
    """NATS could not be reached, refused us, or lacks what flarebus needs (JetStream).

    ``kind`` says which: ``unreachable`` (no server answered: worth waiting for),
    ``auth`` (the server refused the credentials), ``tls`` (the TLS handshake
    failed), ``credentials`` (a seed or creds file flarebus cannot use),
    ``jetstream``. All but ``unreachable`` are ``permanent``: retrying cannot help.
    """

    servers: list[str]
    message: str
    kind: str = "unreachable"

    @property
    def permanent(self) -> bool:
        return self.kind != "unreachable"

    def __str__(self) -> str:
        return f"NATS at {', '.join(self.servers)}: {self.message}"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One setting of an existing stream or bucket that is not what the config asks for."""

    setting: str
    existing: object
    wanted: object

    def __str__(self) -> str:
        return f"{self.setting} is {self.existing}, wanted {self.wanted}"


@dataclass(eq=False)
class StreamSettingsError(FlarebusError):
    """A JetStream stream or KV bucket could not be created or brought to its settings.

    ``resource`` is e.g. ``stream FLAREBUS_TRIGGERS`` or ``bucket FLAREBUS_ENGINE_STATE``;
    ``mismatches`` what differs (empty when creating failed); ``reason`` the server's answer.
    """

    resource: str
    reason: str
    mismatches: list[Mismatch] = field(default_factory=list)

    def __str__(self) -> str:
        differs = f" ({'; '.join(map(str, self.mismatches))})" if self.mismatches else ""
        return f"{self.resource}{differs}: {self.reason}"


@dataclass(eq=False)
class PluginError(FlarebusError):
    """A plugin could not be loaded or configured; ``source`` says where it came from."""

    plugin: str
    message: str
    source: str = ""

    def __str__(self) -> str:
        origin = f" (from {self.source})" if self.source else ""
        return f"plugin {self.plugin!r}{origin}: {self.message}"


@dataclass(eq=False)
class PluginConfigError(InvalidFileError):
    """A plugin's config does not match what the plugin declared; ``problems`` says where."""

    plugin: str = ""


@dataclass(eq=False)
class ActionError(FlarebusError):
    """An action failed for one trigger: which plugin, why, on which try.

    ``permanent`` marks failures a retry cannot fix (unknown plugin, invalid
    config), which go to the dead-letter subject at once.
    """

    plugin: str
    error: str
    tries: int = 1
    permanent: bool = False

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} failed (try {self.tries}): {self.error}"


@dataclass(eq=False)
class SilenceError(FlarebusError):
    """A silence that cannot be added, found or expired; ``silence_id`` names it when known."""

    message: str
    silence_id: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(eq=False)
class WebError(FlarebusError):
    """The web console cannot serve: its address is taken, or is not ``host:port``."""

    listen: str
    message: str

    def __str__(self) -> str:
        return f"web console on {self.listen}: {self.message}"
