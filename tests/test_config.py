"""The config file: validated with file:line:col errors, and overridden by env and flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from flarebus.bus import connect_options
from flarebus.config import load_config
from flarebus.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flarebus.yaml"
    path.write_text(text)
    return path


class TestPrecedence:
    """Flags over FLAREBUS_* over the file over defaults."""

    def test_defaults(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """With no file, env or flags, every role gets working defaults."""
        monkeypatch.chdir(tmp_path)
        config = load_config(env={})
        assert config.nats.servers == ["nats://127.0.0.1:4222"]
        assert config.worker.default_action == "log"
        assert not config.servers_given

    def test_file_then_env_then_flags(self, tmp_path: Path) -> None:
        """Each layer overrides only what it names; durations become seconds."""
        path = write(tmp_path, "nats:\n  servers: nats://file:4222\n  token: t-file\n"
                               "worker:\n  concurrency: 4\n  timeout: 1m30s\n")
        config = load_config(path, env={})
        assert config.nats.servers == ["nats://file:4222"]
        assert (config.worker.concurrency, config.worker.timeout) == (4, 90.0)
        config = load_config(path, env={"FLAREBUS_NATS_URL": "nats://a:1,nats://b:2",
                                        "FLAREBUS_WORKER_CONCURRENCY": "8"})
        assert config.nats.servers == ["nats://a:1", "nats://b:2"]
        assert config.worker.concurrency == 8 and config.nats.token == "t-file"
        config = load_config(path, env={"FLAREBUS_NATS_URL": "nats://a:1"},
                             overrides={"nats": {"servers": ["nats://flag:3"], "token": None}})
        assert config.nats.servers == ["nats://flag:3"] and config.nats.token == "t-file"
        assert config.servers_given

    def test_seed_plugin_variables(self, tmp_path: Path) -> None:
        """PLUGIN_DIR and ACTION_PLUGIN, from the plugin guides, still configure workers."""
        config = load_config(None, env={"PLUGIN_DIR": "/opt/plugins", "ACTION_PLUGIN": "file"})
        assert config.worker.plugin_dir == "/opt/plugins"
        assert config.worker.default_action == "file"

    def test_connect_options_cover_auth_and_tls(self) -> None:
        """User/password, token, NKey seed and creds reach nats-py's connect()."""
        config = load_config(None, env={}, overrides={"nats": {
            "servers": ["nats://x:1"], "user": "u", "password": "p", "token": "t",
            "nkey_seed": "/seed", "creds": "/c.creds", "name": "svc"}})
        options = connect_options(config.nats)
        assert options["user"] == "u" and options["password"] == "p"
        assert options["token"] == "t" and options["nkeys_seed"] == "/seed"
        assert options["user_credentials"] == "/c.creds" and options["name"] == "svc"
        assert options["max_reconnect_attempts"] == -1


class TestErrors:
    """Bad config files are reported like a compiler would."""

    @pytest.mark.parametrize(("text", "expected"), [
        ("nats:\n  sevrers: nats://x:1\n",
         "flarebus.yaml:2:3: nats.sevrers: unknown key; did you mean 'servers'?"),
        ("worker:\n  timeout: 30 sec\n",
         'flarebus.yaml:2:12: worker.timeout: "30 sec" is not a duration (use 30s, 1m30s, 500ms)'),
        ("worker:\n  concurrency: many\n",
         'flarebus.yaml:2:16: worker.concurrency: expected an integer, got "many"'),
        ("engine:\n  shard: 3\n", "flarebus.yaml:2:10: engine.shard: 3 is not a shard (use i/N"),
        ("telemetry:\n  exporter: jaeger\n",
         'flarebus.yaml:2:13: telemetry.exporter: "jaeger" is not one of: none, console, otlp'),
        ("nats: [1\n", "flarebus.yaml:2:1: YAML syntax:"),
        ("samplers:\n  - interval: 1s\n",
         "flarebus.yaml:2:5: samplers[0]: missing required key 'sampler'"),
        ("samplers:\n  - {sampler: system, interval: 0}\n",
         "flarebus.yaml:2:33: samplers[0].interval: 0 is not a duration (use 30s, 1m30s, 500ms)"),
        ("nats:\n  servers: []\n",
         "flarebus.yaml:2:12: nats.servers: [] is not a server URL or a list of them"),
        ("plugins:\n  log: {enabld: true}\n",
         "flarebus.yaml:2:9: plugins.log.enabld: unknown key; did you mean 'enabled'?"),
        ("engine:\n  metrics_prefix: a.b\n", 'flarebus.yaml:2:19: engine.metrics_prefix: "a.b" is '
                                            "not a subject token (letters, digits, _ and -)"),
        ("nats: 3\n", "flarebus.yaml:1:7: nats: expected a mapping, got 3"),
    ])
    def test_each_error_names_file_line_column(self, tmp_path: Path, text: str,
                                               expected: str) -> None:
        """The message gives position, field and reason, never a schema dump."""
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text), env={})
        message = str(caught.value)
        assert message.startswith(str(tmp_path))
        assert expected in message
        assert "is not valid under" not in message

    def test_all_problems_in_one_run(self, tmp_path: Path) -> None:
        """Two mistakes give two lines, in file order."""
        path = write(tmp_path, "worker:\n  timeout: soon\n  concurrency: 0\n")
        with pytest.raises(ConfigError) as caught:
            load_config(path, env={})
        assert [p.line for p in caught.value.problems] == [2, 3]

    def test_bad_environment_value(self) -> None:
        """A bad duration in the environment is reported with the variable's value."""
        with pytest.raises(ConfigError, match="not a duration"):
            load_config(None, env={"FLAREBUS_WORKER_TIMEOUT": "forever"})

    def test_every_bad_variable_is_named(self) -> None:
        """Each variable is decoded on its own: every bad one is reported, by name."""
        with pytest.raises(ConfigError) as caught:
            load_config(None, env={"FLAREBUS_WORKER_CONCURRENCY": "0",
                                   "FLAREBUS_ENGINE_SHARD": "3"})
        assert [str(p) for p in caught.value.problems] == [
            '<environment>:1:1: FLAREBUS_WORKER_CONCURRENCY: must be >= 1, got "0"',
            '<environment>:1:1: FLAREBUS_ENGINE_SHARD: "3" is not a shard (use i/N, e.g. 0/2)']


class TestDecoding:
    """The file and the environment decode to the same plain, typed values."""

    def test_values_are_typed_builtins(self, tmp_path: Path) -> None:
        """Durations are plain floats, text from the environment becomes ints and booleans."""
        path = write(tmp_path, "nats:\n  connect_timeout: 2s\nworker:\n  timeout: 1m\n")
        config = load_config(path, env={"FLAREBUS_WORKER_CONCURRENCY": "8",
                                        "FLAREBUS_NATS_TLS_HANDSHAKE_FIRST": "true",
                                        "FLAREBUS_ENGINE_CHECKPOINT_INTERVAL": "500ms"})
        values = (config.nats.connect_timeout, config.worker.timeout,
                  config.engine.checkpoint_interval)
        assert values == (2.0, 60.0, 0.5) and {type(v) for v in values} == {float}
        assert config.worker.concurrency == 8 and config.nats.tls_handshake_first is True
        assert type(config.nats.servers) is list

    def test_empty_variable_counts_as_unset(self) -> None:
        """FLAREBUS_NATS_URL= (empty) leaves the default server, and says nobody named one."""
        config = load_config(None, env={"FLAREBUS_NATS_URL": "", "FLAREBUS_NATS_TOKEN": " "})
        assert config.nats.servers == ["nats://127.0.0.1:4222"] and not config.servers_given
        assert config.nats.token is None
