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
