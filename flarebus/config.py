"""One config file for every role, and how flags and environment override it.

Precedence, highest first: command-line flags, ``FLAREBUS_*`` environment
variables, the config file (``--config FILE`` or ``./flarebus.yaml``), defaults.
The file is decoded into the Structs below (flarebus.typed: every problem at
``file:line:column``, like rule files); schemas/config.schema.json is generated
from them, so their docstrings and descriptions speak to the user writing the
file.

Environment: ``FLAREBUS_<SECTION>_<KEY>`` sets a scalar key of a section, e.g.
``FLAREBUS_NATS_URL`` (servers, comma-separated), ``FLAREBUS_NATS_TOKEN``,
``FLAREBUS_WORKER_CONCURRENCY``, ``FLAREBUS_ENGINE_SHARD``,
``FLAREBUS_JETSTREAM_REPLICAS``. The metric-reader lineage's variables are
honoured too: ``PLUGIN_DIR`` and ``ACTION_PLUGIN``.
Each variable is decoded on its own, from text (``"8"`` is 8), and a bad one
is named; an empty one counts as unset. Flags arrive typed from argparse and
are set as given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeAlias

import msgspec
from msgspec import Meta

from flarebus import typed
from flarebus.durations import PositiveSeconds, Seconds
from flarebus.errors import ConfigError, InvalidFileError, Problem
from flarebus.events import TOKEN_PATTERN
from flarebus.gate_config import InhibitRule, RateLimits
from flarebus.grouping import GroupSettings
from flarebus.ingest_settings import IngestSettings, InputLimits
from flarebus.problems import short
from flarebus.servers import DEFAULT_NATS_URL

if TYPE_CHECKING:
    from flarebus.yamlfile import YamlDocument

DEFAULT_CONFIG_FILE = "flarebus.yaml"

Count = Annotated[int, Meta(ge=1)]
Token = Annotated[str, Meta(pattern=TOKEN_PATTERN, extra_json_schema={
    "x-hint": "is not a subject token (letters, digits, _ and -)"})]


class _ServerUrls(list[str]):
    """``nats.servers``: one URL or a list of them (a msgspec custom type, see flarebus.typed)."""

    json_schema: ClassVar[dict[str, Any]] = {"anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]}

    @classmethod
    def from_yaml(cls, value: Any) -> list[str]:
        urls = [value] if isinstance(value, str) else value
        if not (isinstance(urls, list) and urls and all(isinstance(u, str) and u for u in urls)):
            raise ValueError(f"{short(value)} is not a server URL or a list of them")
        return cls(urls)


# A list to type checkers (users write NatsSettings(servers=[...])); to msgspec, the type
# that also takes one URL.
if TYPE_CHECKING:
    ServerUrls: TypeAlias = list[str]
else:
    ServerUrls = _ServerUrls


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A section of the file. Its values are builtins, whatever type decoded them."""

    def __post_init__(self) -> None:
        # A duration decodes as a float subclass (a custom type must return its own type),
        # and msgspec cannot encode that back: consumers get the float itself.
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and type(value) is not float:
                setattr(self, name, float(value))
            elif isinstance(value, list) and type(value) is not list:
                setattr(self, name, list(value))


class NatsSettings(_Section):
    """How to reach the NATS server or cluster (JetStream enabled)."""

    servers: Annotated[ServerUrls, Meta(description="a server URL or a list of them")] = \
        msgspec.field(default_factory=lambda: [DEFAULT_NATS_URL])
    name: Annotated[str, Meta(description="connection name shown by the server")] = "flarebus"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: Annotated[str | None, Meta(
        description="path of a file holding an NKey seed")] = None
    creds: Annotated[str | None, Meta(description="path of a .creds (JWT + seed) file")] = None
    tls_ca: Annotated[str | None, Meta(description="CA bundle to verify the server")] = None
    tls_cert: Annotated[str | None, Meta(description="client certificate (a file)")] = None
    tls_key: Annotated[str | None, Meta(description="the client certificate's key")] = None
    tls_handshake_first: bool = False
    connect_timeout: Seconds = 5.0
    reconnect_wait: Seconds = 1.0


class JetStreamSettings(_Section):
    """The streams and KV buckets flarebus creates: on a 3-node cluster, ask for 3 replicas.

    Every role applies them to what it creates, and an existing stream or bucket whose
    settings differ is reported and updated (flarebus.jetstream).
    """

    replicas: Annotated[int, Meta(ge=1, le=5, description=(
        "copies of every stream and bucket (1, or 3 on a 3-node cluster)"))] = 1
    triggers_max_age: Annotated[PositiveSeconds, Meta(
        description="how long the triggers stream keeps a trigger")] = 7 * 24 * 3600.0
    triggers_max_bytes: Annotated[int, Meta(ge=-1, description=(
        "size limit of the triggers stream, oldest dropped first (-1: none)"))] = -1
    duplicate_window: Annotated[PositiveSeconds, Meta(
        description="how long a trigger id is remembered to drop a republished trigger")] = 120.0


class EngineSettings(_Section):
    """The rules engine (`flarebus engine`, and the engine of `flarebus up`)."""

    rules: Annotated[list[str], Meta(description="rule files or directories")] = \
        msgspec.field(default_factory=list)
    metrics_prefix: Token = "metrics"
    stacks_prefix: Token = "stacks"
    invalid_subject: Annotated[str, Meta(min_length=1)] = "flarebus.invalid"
    shard: Annotated[str, Meta(pattern=r"^([0-9]+/[1-9][0-9]*)?$", description=(
        "static shard i/N; empty: engines share the partitions through leases"),
        extra_json_schema={"x-hint": "is not a shard (use i/N, e.g. 0/2)"})] = ""
    lease_ttl: Annotated[Seconds, Meta(description=(
        "coordinated engines: how long a dead engine holds its partitions"))] = 6.0
    checkpoint_interval: Seconds = 5.0
    pending_msgs_limit: Count = 1_000_000
    pending_bytes_limit: Count = 512 * 1024 * 1024
    max_publish_in_flight: Count = 256
    limits: InputLimits = msgspec.field(default_factory=InputLimits)
    ingest: IngestSettings = msgspec.field(default_factory=IngestSettings)


class WorkerSettings(_Section):
    """Action workers (`flarebus worker`, and the worker of `flarebus up`)."""

    concurrency: Count = 16
    batch: Count = 32
    max_tries: Count = 5
    backoff_initial: Seconds = 1.0
    backoff_max: Seconds = 60.0
    timeout: Seconds = 30.0
    grace: Seconds = 30.0
    ack_wait: Seconds = 30.0
    default_action: Annotated[str, Meta(
        description="the action for rules naming none (ACTION_PLUGIN)")] = "log"
    plugin_dir: Annotated[str | None, Meta(
        description="directory of .py plugin files (PLUGIN_DIR)")] = None
    consumer: Annotated[Token, Meta(
        description="durable JetStream consumer all workers share")] = "flarebus-workers"
    done_ttl: Annotated[Seconds, Meta(
        description="how long completed actions are remembered")] = 24 * 3600.0
    threads: Annotated[Count, Meta(description="threads for blocking (def) plugins")] = 8


class SamplerSettings(_Section):
    """One sampler `flarebus sample` and `flarebus up` run."""

    sampler: Annotated[str, Meta(min_length=1)]
    interval: Seconds | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class PluginSettings(_Section):
    """One plugin: enabled, its config, and its limits."""

    enabled: bool = True
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout: Seconds | None = None
    concurrency: Count | None = None


class TelemetrySettings(_Section):
    """Traces and metrics (OpenTelemetry)."""

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None
    service_name: str = "flarebus"


class WebSettings(_Section):
    """The web console (`flarebus web`, and the console of `flarebus up`)."""

    enabled: Annotated[bool, Meta(description="`flarebus up` serves the console")] = True
    listen: Annotated[str, Meta(description="host:port; loopback unless you mean otherwise")] = \
        "127.0.0.1:8090"
    token: Annotated[str | None, Meta(
        description="allows writes (re-queue, silences) to who sends it; unset: read-only")] = None
    flamegraph_subjects: Annotated[str, Meta(
        description="where flamegraph actions publish graphs (their subject option)")] = \
        "flamegraphs.>"


class ConfigFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One file for every role. Precedence: command-line flags, then FLAREBUS_* environment,
    then this file, then defaults.
    """

    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    samplers: Annotated[list[SamplerSettings], Meta(
        description="samplers `flarebus sample` and `flarebus up` run")] = \
        msgspec.field(default_factory=list)
    plugins: Annotated[dict[str, PluginSettings], Meta(
        description="per plugin: enabled and its config")] = msgspec.field(default_factory=dict)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    group: Annotated[GroupSettings | None, Meta(
        description="grouping defaults; when present, every rule without a group: of its "
                    "own is grouped (docs/notifications.md)")] = None
    jetstream: JetStreamSettings = msgspec.field(default_factory=JetStreamSettings)
    inhibit: Annotated[list[InhibitRule], Meta(
        description="while a source alert fires, matching targets run no action")] = \
        msgspec.field(default_factory=list)
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)
    web: WebSettings = msgspec.field(default_factory=WebSettings)


class Config(ConfigFile, kw_only=True):
    """The whole configuration, with every default filled in, and where it came from."""

    source: str | None = None  # the file it came from, if any
    servers_given: bool = False  # False: nats.servers is the default, nobody named a server


# Environment names that are not FLAREBUS_<SECTION>_<KEY>, kept for the seed plugins' users.
_ALIASES = {
    "FLAREBUS_NATS_URL": ("nats", "servers"),
    "FLAREBUS_NATS_CREDS": ("nats", "creds"),
    "PLUGIN_DIR": ("worker", "plugin_dir"),
    "ACTION_PLUGIN": ("worker", "default_action"),
}
_SCALAR_SECTIONS: dict[str, type[_Section]] = {
    "nats": NatsSettings, "engine": EngineSettings, "worker": WorkerSettings,
    "telemetry": TelemetrySettings, "jetstream": JetStreamSettings, "web": WebSettings}


def _from_env(env: Mapping[str, str]) -> list[tuple[str, str, str, Any]]:
    """(variable, section, key, value) for each setting ``FLAREBUS_*`` and the aliases give."""
    out: list[tuple[str, str, str, Any]] = []
    for var, value in env.items():
        if var in _ALIASES:
            section, key = _ALIASES[var]
        elif var.startswith("FLAREBUS_"):
            section, _, key = var[len("FLAREBUS_"):].lower().partition("_")
            if key not in getattr(_SCALAR_SECTIONS.get(section), "__struct_fields__", ()):
                continue
        else:
            continue
        if not value.strip():  # FLAREBUS_X= (empty) is how a shell unsets a setting
            continue
        if key == "servers":
            out.append((var, section, key, [u.strip() for u in value.split(",") if u.strip()]))
        elif key == "rules":
            out.append((var, section, key, [p for p in value.split(os.pathsep) if p]))
        else:
            out.append((var, section, key, value))
    return out


def _read_file(path: str | Path) -> tuple[ConfigFile, bool, str]:
    """The decoded file, whether it names servers, and its name; ConfigError lists problems."""
    # Only a file needs YAML: `flarebus publish` with flags and environment starts without it.
    from flarebus.yamlfile import load_yaml

    try:
        doc = load_yaml(path)
    except InvalidFileError as exc:
        raise ConfigError(exc.problems) from None
    if doc.data is None:
        return ConfigFile(), False, doc.file
    file, issues = typed.decode(doc.data, ConfigFile)
    if file is None:
        raise ConfigError(typed.problems(doc, issues))
    return file, "servers" in (doc.data.get("nats") or {}), doc.file


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load the config: ``path`` (or ./flarebus.yaml if present), then env, then overrides.

    ``overrides`` are the flags, shaped like the file (``{"nats": {"servers": [...]}}``);
    None values mean "flag not given".
    """
    env = os.environ if env is None else env
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    file, servers_given, source = _read_file(path) if path is not None \
        else (ConfigFile(), False, None)
    config = Config(**msgspec.structs.asdict(file), source=source)
    problems = []
    for var, section, key, value in _from_env(env):
        decoded, issues = typed.decode({key: value}, _SCALAR_SECTIONS[section], strict=False)
        if decoded is None:
            problems += [Problem("<environment>", 1, 1, f"{var}: {i.message}") for i in issues]
            continue
        setattr(getattr(config, section), key, getattr(decoded, key))
        servers_given |= key == "servers"
    if problems:
        raise ConfigError(problems)
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                setattr(getattr(config, section), key, value)
                servers_given |= key == "servers"
    config.servers_given = servers_given
    return config


def config_document(config: Config) -> YamlDocument | None:
    """The config file again, for error positions in its ``plugins:`` and ``samplers:``."""
    from flarebus.yamlfile import load_yaml

    return load_yaml(config.source) if config.source else None
