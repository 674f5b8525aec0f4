"""One config file for every role, and how flags and environment override it.

Precedence, highest first: command-line flags, ``FLAREBUS_*`` environment
variables, the config file (``--config FILE`` or ``./flarebus.yaml``), defaults.
The file is validated against ``schemas/config.schema.json`` and errors are
reported as ``file:line:column`` like rule files.

Environment: ``FLAREBUS_<SECTION>_<KEY>`` sets a scalar key of a section, e.g.
``FLAREBUS_NATS_URL`` (servers, comma-separated), ``FLAREBUS_NATS_TOKEN``,
``FLAREBUS_WORKER_CONCURRENCY``, ``FLAREBUS_ENGINE_SHARD``. The metric-reader
lineage's variables are honoured too: ``PLUGIN_DIR`` and ``ACTION_PLUGIN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from flarebus import schemas
from flarebus.durations import parse_duration
from flarebus.errors import ConfigError, InvalidFileError, Problem
from flarebus.servers import DEFAULT_NATS_URL

if TYPE_CHECKING:
    from flarebus.yamlfile import YamlDocument

DEFAULT_CONFIG_FILE = "flarebus.yaml"


class NatsSettings(msgspec.Struct, kw_only=True):
    """Everything needed to reach a real NATS deployment."""

    servers: list[str] = msgspec.field(default_factory=lambda: [DEFAULT_NATS_URL])
    name: str = "flarebus"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_handshake_first: bool = False
    connect_timeout: float = 5.0
    reconnect_wait: float = 1.0


class EngineSettings(msgspec.Struct, kw_only=True):
    rules: list[str] = msgspec.field(default_factory=list)
    metrics_prefix: str = "metrics"
    stacks_prefix: str = "stacks"
    invalid_subject: str = "flarebus.invalid"
    shard: str = "0/1"
    checkpoint_interval: float = 5.0
    pending_msgs_limit: int = 1_000_000
    pending_bytes_limit: int = 512 * 1024 * 1024
    max_publish_in_flight: int = 256


class WorkerSettings(msgspec.Struct, kw_only=True):
    concurrency: int = 16
    batch: int = 32
    max_tries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    timeout: float = 30.0
    grace: float = 30.0
    ack_wait: float = 30.0
    default_action: str = "log"
    plugin_dir: str | None = None
    consumer: str = "flarebus-workers"  # the durable pull consumer all workers share
    done_ttl: float = 24 * 3600.0  # how long (trigger id, action) completions are remembered
    threads: int = 8  # thread pool for plain-def (blocking) plugins


class SamplerSettings(msgspec.Struct, kw_only=True):
    sampler: str
    interval: float | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class PluginSettings(msgspec.Struct, kw_only=True):
    enabled: bool = True
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout: float | None = None
    concurrency: int | None = None


class TelemetrySettings(msgspec.Struct, kw_only=True):
    exporter: str = "none"
    endpoint: str | None = None
    service_name: str = "flarebus"


class Config(msgspec.Struct, kw_only=True):
    """The whole configuration, with every default filled in."""

    nats: NatsSettings = msgspec.field(default_factory=NatsSettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    worker: WorkerSettings = msgspec.field(default_factory=WorkerSettings)
    samplers: list[SamplerSettings] = msgspec.field(default_factory=list)
    plugins: dict[str, PluginSettings] = msgspec.field(default_factory=dict)
    telemetry: TelemetrySettings = msgspec.field(default_factory=TelemetrySettings)
    source: str | None = None  # the file it came from, if any
    servers_given: bool = False  # False: nats.servers is the default, nobody named a server


# Environment names that are not FLAREBUS_<SECTION>_<KEY>, kept for the seed plugins' users.
_ALIASES = {
    "FLAREBUS_NATS_URL": ("nats", "servers"),
    "FLAREBUS_NATS_CREDS": ("nats", "creds"),
    "PLUGIN_DIR": ("worker", "plugin_dir"),
    "ACTION_PLUGIN": ("worker", "default_action"),
}
_SCALAR_SECTIONS = ("nats", "engine", "worker", "telemetry")


def _seconds(data: Any, schema: Mapping[str, Any]) -> Any:
    """Turn every value the schema declares a duration into seconds (a float)."""
    if schema.get("$ref") == "#/$defs/duration" and isinstance(data, str):
        return parse_duration(data)
    if isinstance(data, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, value in data.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            out[key] = _seconds(value, sub)
        return out
    if isinstance(data, list) and isinstance(schema.get("items"), dict):
        return [_seconds(item, schema["items"]) for item in data]
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The settings ``FLAREBUS_*`` (and the seed's aliases) give, as a partial config."""
    out: dict[str, dict[str, Any]] = {}
    fields = {name: {f.name for f in msgspec.structs.fields(cls)} for name, cls in (
        ("nats", NatsSettings), ("engine", EngineSettings), ("worker", WorkerSettings),
        ("telemetry", TelemetrySettings))}
    for var, value in env.items():
        if var in _ALIASES:
            section, key = _ALIASES[var]
        elif var.startswith("FLAREBUS_"):
            rest = var[len("FLAREBUS_"):].lower()
            section, _, key = rest.partition("_")
            if section not in _SCALAR_SECTIONS or key not in fields[section]:
                continue
        else:
            continue
        if key == "servers":
            out.setdefault(section, {})[key] = [u.strip() for u in value.split(",") if u.strip()]
        elif key == "rules":
            out.setdefault(section, {})[key] = [p for p in value.split(os.pathsep) if p]
        else:
            out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, recursively; None in ``over`` means "not given"."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping):
            merged[key] = _merge(merged.get(key) or {}, value)
        elif value is not None:
            merged[key] = value
    return merged


def _convert(data: dict[str, Any], origin: str) -> Config:
    try:
        return msgspec.convert(data, Config, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise ConfigError([Problem(origin, 1, 1, str(exc))]) from None


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> Config:
    """Load the config: ``path`` (or ./flarebus.yaml if present), then env, then overrides.

    ``overrides`` are the flags, shaped like the file (``{"nats": {"servers": [...]}}``);
    None values mean "flag not given".
    """
    env = os.environ if env is None else env
    file_data: dict[str, Any] = {}
    source: str | None = None
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        # Only a file needs YAML and JSON Schema (about 60 ms of imports together):
        # `flarebus publish` with flags and environment alone starts without them.
        from flarebus.validation import schema_problems
        from flarebus.yamlfile import load_yaml

        try:
            doc = load_yaml(path)
        except InvalidFileError as exc:
            raise ConfigError(exc.problems) from None
        source = doc.file
        if doc.data is not None:
            problems = schema_problems(doc, "config")
            if problems:
                raise ConfigError(problems)
            file_data = _seconds(doc.data, schemas.load("config"))
        if isinstance(file_data.get("nats", {}).get("servers"), str):
            file_data["nats"]["servers"] = [file_data["nats"]["servers"]]
    env_data = _from_env(env)
    try:
        env_data = _seconds(env_data, schemas.load("config"))
    except ValueError as exc:
        raise ConfigError([Problem("<environment>", 1, 1, str(exc))]) from None
    merged = _merge(_merge(file_data, env_data), overrides or {})
    config = _convert(merged, source or "<settings>")
    config.source = source
    config.servers_given = bool(merged.get("nats", {}).get("servers"))
    return config


def config_document(config: Config) -> YamlDocument | None:
    """The config file again, for error positions in its ``plugins:`` and ``samplers:``."""
    from flarebus.yamlfile import load_yaml

    return load_yaml(config.source) if config.source else None
