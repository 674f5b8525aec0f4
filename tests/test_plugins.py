"""Plugin discovery (entry points, PLUGIN_DIR, built-ins), clashes, broken files, config checks."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from flarebus import Action, Exporter, Sampler, Sink
from flarebus.actions.host import PluginHost
from flarebus.config import config_document, load_config
from flarebus.errors import PluginConfigError, PluginError
from flarebus.plugin import kind_of
from flarebus.registry import PLUGIN_DIR_PACKAGE, discover
from tests.plugin_pkg.harness import PLUGINS, registry_of, trigger
from tests.support import run_flarebus

DIST_SRC = Path(__file__).parent / "plugin_pkg" / "dist_src"


def install_test_package(target: Path, extra: dict[str, str] | None = None) -> Path:
    """Install tests/plugin_pkg/dist_src into ``target`` as pip would: code plus a dist-info.

    (``pip install`` needs the ``wheel`` package to build, which is not a flarebus
    dependency; the result on disk - package dir, METADATA, entry_points.txt, RECORD
    - is the same, and importlib.metadata discovers it the same way.) ``extra``
    declares more ``flarebus.plugins`` entry points, as a later version might.
    """
    project = tomllib.loads((DIST_SRC / "pyproject.toml").read_text())["project"]
    shutil.copytree(DIST_SRC / "flarebus_test_plugin", target / "flarebus_test_plugin")
    dist_info = target / f"flarebus_test_plugin-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    groups["flarebus.plugins"].update(extra or {})
    (dist_info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in groups.items()))
    (dist_info / "RECORD").write_text("")
    return target


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


# -- entry points -----------------------------------------------------------------------

def test_entry_point_plugin_is_listed_by_flarebus_plugins(tmp_path: Path) -> None:
    """An installed package's `flarebus.plugins` entry point shows up, with its distribution."""
    site = install_test_package(tmp_path / "site")
    result = run_flarebus("plugins", "--json", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert rows["ep_hello"]["origin"] == "entry point"
    assert rows["ep_hello"]["kind"] == "action"
    assert "flarebus-test-plugin 0.1.0" in rows["ep_hello"]["source"]
    assert (rows["ep_counter"]["kind"], rows["ep_counter"]["origin"]) == ("sampler", "entry point")
    assert rows["log"]["origin"] == "built-in"
    assert (rows["system"]["kind"], rows["system"]["origin"]) == ("sampler", "built-in")


def test_entry_point_sampler_runs_with_flarebus_sample(tmp_path: Path) -> None:
    """A sampler from the same entry point group as actions runs, its config validated."""
    env = {"PYTHONPATH": str(install_test_package(tmp_path / "site"))}
    result = run_flarebus("sample", "ep_counter", "--set", "start=41", "--print", "--once",
                          env=env)
    assert result.returncode == 0, result.stderr
    [sample] = map(json.loads, result.stdout.splitlines())
    assert (sample["name"], sample["value"]) == ("ep.counter", 42)
    bad = run_flarebus("sample", "ep_counter", "--set", "stat=1", "--print", "--once", env=env)
    assert bad.returncode == 1
    assert "plugin 'ep_counter': stat: unknown key; did you mean 'start'?" in bad.stderr


def test_sampler_entry_point_clashing_with_a_built_in_is_a_clash(tmp_path: Path) -> None:
    """An entry point sampler named `system`: reported by `flarebus plugins`, never used."""
    site = install_test_package(tmp_path / "site",
                                {"shadow": "flarebus_test_plugin:ShadowSystem"})
    env = {"PYTHONPATH": str(site)}
    listed = run_flarebus("plugins", env=env)
    assert listed.returncode == 1
    [clash] = [line for line in listed.stderr.splitlines() if line.startswith("clash:")]
    assert "plugin 'system'" in clash and "two plugins have this name" in clash
    assert "entry point flarebus_test_plugin:ShadowSystem (flarebus-test-plugin 0.1.0)" in clash
    assert "built-in flarebus.samplers.system:SystemSampler" in clash
    sampled = run_flarebus("sample", "system", "--print", "--once", env=env)
    assert sampled.returncode == 1
    assert "two plugins have this name" in sampled.stderr
    assert sampled.stdout == ""  # neither of the two ran


async def test_entry_point_plugin_runs_with_validated_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Discovered in-process, configured from the config file, executed through the host."""
    monkeypatch.syspath_prepend(str(install_test_package(tmp_path / "site")))
    registry = discover()
    found = registry.get("ep_hello")
    assert found is not None and found.origin == "entry point"
    config_file = write(tmp_path, "flarebus.yaml", """\
        plugins:
          ep_hello:
            config: {greeting: hi}
        """)
    config = load_config(config_file, env={})
    host = PluginHost(registry, config.plugins, config_doc=config_document(config))
    await host.start()
    try:
        from flarebus.events import ActionRef
        await host.run(ActionRef(plugin="ep_hello"), trigger("greet"))
    finally:
        await host.close()
    assert found.plugin.seen == ["hi greet"]


# -- PLUGIN_DIR -------------------------------------------------------------------------

def test_plugin_dir_files_load_under_private_module_names() -> None:
    """A PLUGIN_DIR file's `plugin` is found; its module does not shadow a top-level name."""
    registry = discover(PLUGINS, use_entry_points=False, builtins=False)
    found = registry.get("recorder")
    assert found is not None and found.kind == "action" and found.origin == "plugin dir"
    assert found.source == str(PLUGINS / "recorder.py")
    assert type(found.plugin).__module__.startswith(f"{PLUGIN_DIR_PACKAGE}.recorder_")
    assert "recorder" not in sys.modules


def test_broken_plugin_file_is_reported_with_traceback_and_skipped(tmp_path: Path) -> None:
    """A file that raises on import, a syntax error, a file without `plugin`: reported, skipped."""
    write(tmp_path, "good.py", """\
        from flarebus import Action
        class Good(Action):
            name = "good"
            async def execute(self, trigger):
                pass
        plugin = Good()
        """)
    write(tmp_path, "raises.py", "import json\nraise RuntimeError('no config for raises')\n")
    write(tmp_path, "syntax.py", "def broken(:\n")
    write(tmp_path, "empty.py", "x = 1\n")
    write(tmp_path, "_helper.py", "raise SystemExit('private files are not plugins')\n")
    registry = discover(tmp_path, use_entry_points=False, builtins=False)
    assert list(registry.plugins) == ["good"]
    broken = {Path(b.source.removeprefix("file ")).name: b for b in registry.broken}
    assert set(broken) == {"raises.py", "syntax.py", "empty.py"}
    assert "RuntimeError: no config for raises" in broken["raises.py"].error
    assert f'File "{tmp_path / "raises.py"}", line 2' in broken["raises.py"].traceback
    assert "SyntaxError" in broken["syntax.py"].error
    assert "no module-level `plugin`" in broken["empty.py"].error


def test_flarebus_plugins_lists_sources_and_broken_files(tmp_path: Path) -> None:
    """`flarebus plugins` prints name, kind, origin and source; broken files on stderr, exit 1."""
    shutil.copy(PLUGINS / "recorder.py", tmp_path / "recorder.py")
    write(tmp_path, "oops.py", "raise ImportError('missing dependency: pagerduty')\n")
    result = run_flarebus("plugins", "--plugin-dir", str(tmp_path))
    assert result.returncode == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith("recorder"))
    assert line.split()[:3] == ["recorder", "action", "plugin"]
    assert str(tmp_path / "recorder.py") in line
    assert any(x.split()[:2] == ["slack", "sink"] for x in result.stdout.splitlines())
    assert f"broken: file {tmp_path / 'oops.py'}: ImportError: missing dependency" in result.stderr


def test_name_clash_is_an_error_naming_both_sources(tmp_path: Path) -> None:
    """A PLUGIN_DIR plugin named like a built-in: a clash naming both; the worker will not start."""
    write(tmp_path, "mylog.py", """\
        from flarebus import Action
        class MyLog(Action):
            name = "log"
            async def execute(self, trigger):
                pass
        plugin = MyLog()
        """)
    registry = discover(tmp_path, use_entry_points=False)
    [clash] = registry.clashes
    assert f"plugin dir {tmp_path / 'mylog.py'}" in str(clash)
    assert "built-in flarebus.actions.builtins.log:LogAction" in str(clash)
    with pytest.raises(PluginError):
        registry.check()
    result = run_flarebus("worker", "--nats", "nats://127.0.0.1:1", "--plugin-dir", str(tmp_path))
    assert result.returncode == 1
    assert "two plugins have this name" in result.stderr
    assert "mylog.py" in result.stderr and "flarebus.actions.builtins.log" in result.stderr


def test_missing_plugin_dir_is_reported_not_fatal(tmp_path: Path) -> None:
    """A PLUGIN_DIR that does not exist is a reported problem; the built-ins still load."""
    registry = discover(tmp_path / "nope", use_entry_points=False)
    assert registry.get("log") is not None
    assert registry.broken[0].error == "not a directory"


# -- kinds ------------------------------------------------------------------------------

def test_all_four_kinds_are_recognised() -> None:
    """Base classes declare their kind; duck-typed plugins are recognised by their method."""
    class Notifier:
        name = "duck"

        def notify(self, rule_name: str, msg: str) -> None: ...

    class Folded(Exporter):
        name = "folded"

    class Cpu(Sampler):
        name = "cpu"

    class Act(Action):
        name = "act"

    class Note(Sink):
        name = "note"

    kinds = [kind_of(p) for p in (Act(), Note(), Cpu(), Folded(), Notifier(), object())]
    assert kinds == ["action", "sink", "sampler", "exporter", "sink", None]


def test_non_plugin_object_in_plugin_dir_is_broken(tmp_path: Path) -> None:
    """`plugin = 42` is not a plugin: reported as broken with what a plugin needs."""
    write(tmp_path, "number.py", "plugin = 42\n")
    registry = Registry = discover(tmp_path, use_entry_points=False, builtins=False)
    assert Registry is registry and registry.plugins == {}
    assert "has none of execute(trigger)" in registry.broken[0].error


# -- config validation ------------------------------------------------------------------

class Channel(Action):
    name = "channel"
    config_schema = {"type": "object", "additionalProperties": False,
                     "required": ["channel"],
                     "properties": {"channel": {"type": "string", "pattern": "^#"}}}

    async def execute(self, trigger: object) -> None: ...


class Strict(Action):
    name = "strict"

    def validate_config(self) -> None:
        raise ValueError("api_key is required when region is eu")

    async def execute(self, trigger: object) -> None: ...


async def start_with(tmp_path: Path, text: str) -> PluginConfigError:
    config = load_config(write(tmp_path, "flarebus.yaml", text), env={})
    host = PluginHost(registry_of(Channel(), Strict()), config.plugins,
                      config_doc=config_document(config))
    with pytest.raises(PluginConfigError) as info:
        await host.start()
    return info.value


async def test_struct_config_errors_point_at_file_line_and_column(tmp_path: Path) -> None:
    """A msgspec-declared config with a wrong type: file:line:col, plugin and field named."""
    error = await start_with(tmp_path, """\
        plugins:
          http:
            config:
              timeout: soon
          channel:
            config: {channel: "#ops"}
          strict: {enabled: false}
        """)
    [problem] = error.problems
    assert (problem.line, problem.column) == (4, 16)
    assert str(problem).startswith(f"{tmp_path / 'flarebus.yaml'}:4:16: plugin 'http': timeout:")
    assert "Expected `float`" in problem.message


async def test_json_schema_config_errors_use_the_rule_file_style(tmp_path: Path) -> None:
    """A JSON-Schema-declared config: unknown key with "did you mean", pattern, own checks."""
    error = await start_with(tmp_path, """\
        plugins:
          channel:
            config:
              chanel: "#ops"
          strict: {}
          nosuch: {}
        """)
    text = str(error)
    lines = [line.split("flarebus.yaml:", 1)[1] for line in text.splitlines()]
    assert lines == [  # in file order, like `flarebus check`
        "4:7: plugin 'channel': chanel: unknown key; did you mean 'channel'?",
        "4:7: plugin 'channel': missing required key 'channel'",
        "5:11: plugin 'strict': api_key is required when region is eu",
        "6:3: plugins.nosuch: no plugin of this name was found (found: alertmanager, channel, "
        "file, flamegraph, http, log, nats, slack, strict, webhook)"]


async def test_plugins_section_configures_only_actions_and_sinks(tmp_path: Path) -> None:
    """A sampler named under plugins: is an error saying where samplers are configured."""
    error = await start_with(tmp_path, """\
        plugins:
          channel: {config: {channel: "#ops"}}
          strict: {enabled: false}
          system: {config: {mounts: [/]}}
        """)
    [problem] = error.problems
    assert str(problem).endswith("4:3: plugins.system: is a sampler; this section configures "
                                 "actions and sinks (samplers are configured in samplers:)")


async def test_valid_config_reaches_the_plugin_converted(tmp_path: Path) -> None:
    """A valid config is converted to the plugin's Struct before init() sees it."""
    config = load_config(write(tmp_path, "flarebus.yaml", """\
        plugins:
          http: {config: {url: "http://127.0.0.1:9/x", timeout: 2}}
        """), env={})
    registry = registry_of()
    host = PluginHost(registry, config.plugins, config_doc=config_document(config))
    await host.start()
    try:
        http = registry.get("http")
        assert http is not None
        assert http.plugin.config.timeout == 2.0
        assert http.plugin.url == "http://127.0.0.1:9/x"
    finally:
        await host.close()


def test_worker_refuses_to_start_on_invalid_plugin_config(tmp_path: Path, nats_url: str) -> None:
    """`flarebus worker` with a bad plugins: section exits 1 with the located error."""
    config_file = write(tmp_path, "flarebus.yaml", """\
        plugins:
          file:
            config: {mode: append}
        """)
    result = run_flarebus("worker", "--nats", nats_url, "--config", str(config_file))
    assert result.returncode == 1
    assert f"{config_file}:3:20: plugin 'file': mode:" in result.stderr
