"""What ships: the wheel holds the whole product under one import name, and it works installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.installed import Installed, tracked_files, wheel_names
from tests.support import package_roots

BUILTIN_PLUGINS = {"log", "file", "http", "webhook", "slack", "nats", "flamegraph",
                   "alertmanager", "flame", "icicle", "top"}
#: the web console's templates and static files are package data too
SHIPPED_SUFFIXES = {".py", ".typed", ".yaml", ".json", ".html", ".js", ".css"}


def expected_wheel_paths() -> set[str]:
    """Where every tracked module and data file of the mapped folders lands in the wheel."""
    mapping = {folder: package.replace(".", "/") for package, folder in package_roots().items()}
    expected = set()
    for rel in tracked_files():
        folder, _, rest = rel.partition("/")
        if folder in mapping and rest and Path(rel).suffix in SHIPPED_SUFFIXES:
            if folder == "flarebus" and "/" in rest:
                continue  # no nested folders in flarebus/ (the mapped ones are other roots)
            expected.add(f"{mapping[folder]}/{rest}")
    return expected


class TestWheel:
    def test_it_installs_only_the_flarebus_namespace(self, installed: Installed) -> None:
        """No generic top-level name (engine, schemas, rules, ...) reaches site-packages."""
        if installed.wheel is None:
            pytest.skip("the CI venv was installed by pip from the tree; see test below")
        tops = {name.split("/")[0] for name in wheel_names(installed.wheel)}
        version = installed.wheel.name.split("-")[1]
        assert tops == {"flarebus", f"flarebus-{version}.dist-info"}

    def test_site_packages_holds_flarebus_and_its_dist_info_only(
            self, installed: Installed, tmp_path: Path) -> None:
        """The install's own record: files under flarebus/ and its dist-info (and the script)."""
        code = ("import importlib.metadata as m; d = m.distribution('flarebus'); "
                "print('\\n'.join(sorted({str(f).split('/')[0] for f in d.files})))")
        result = installed.run([str(installed.python), "-c", code], cwd=tmp_path)
        tops = {t for t in result.stdout.split() if t != ".."}  # ../../../bin/flarebus
        dist_info = {t for t in tops if t.startswith("flarebus-") and t.endswith(".dist-info")}
        assert len(dist_info) == 1, result.stdout + result.stderr
        assert tops == {"flarebus", *dist_info}

    def test_every_tracked_module_and_data_file_is_in_it(self, installed: Installed) -> None:
        """A sub-package or data file added to a folder cannot be left out of the wheel."""
        if installed.wheel is None:
            pytest.skip("no wheel file in the CI venv; the installed-product tests cover it")
        missing = expected_wheel_paths() - set(wheel_names(installed.wheel))
        assert sorted(missing) == []

    def test_the_expected_set_is_not_empty(self) -> None:
        """The check above compares real lists (builtins, schemas and rule files among them)."""
        expected = expected_wheel_paths()
        for path in ("flarebus/actions/builtins/http.py", "flarebus/schemas/rule.schema.json",
                     "flarebus/rules/default.yaml", "flarebus/engine/language/evaluator.py",
                     "flarebus/events.py", "flarebus/py.typed",
                     "flarebus/web/templates/base.html", "flarebus/web/static/flame.js",
                     "flarebus/web/static/console.css"):
            assert path in expected


class TestInstalledProduct:
    def test_plugins_lists_every_builtin_as_loaded(self, installed: Installed,
                                                   tmp_path: Path) -> None:
        """`flarebus plugins` from the install: every built-in loads, nothing is broken."""
        result = installed.run(installed.flarebus("plugins", "--json"), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        loaded = {r["name"] for r in rows if r.get("origin") == "built-in"}
        assert loaded >= BUILTIN_PLUGINS, rows
        assert not [r for r in rows if "error" in r], rows

    def test_imports_beside_an_applications_own_modules(self, installed: Installed,
                                                        tmp_path: Path) -> None:
        """In a directory holding its own schemas.py, engine.py, rules.py and actions/, flarebus
        imports, and the application's modules are still the ones `import schemas` gives."""
        for name in ("schemas", "engine", "rules"):
            (tmp_path / f"{name}.py").write_text(f"OWNER = 'app {name}'\n")
        (tmp_path / "actions").mkdir()
        (tmp_path / "actions" / "__init__.py").write_text("OWNER = 'app actions'\n")
        code = "\n".join([
            "import flarebus",
            "from flarebus import Action, Trigger, Publisher, Frame, MetricSample",
            "import flarebus.samplers.stack, flarebus.engine.language.evaluator",
            "from flarebus import schemas as fb_schemas",
            "import schemas, engine, rules, actions",
            "assert [m.OWNER for m in (schemas, engine, rules, actions)] == "
            "['app schemas', 'app engine', 'app rules', 'app actions']",
            "assert 'rule' in fb_schemas.NAMES and fb_schemas.load('rule')",
            "assert flarebus.__file__.startswith(sys.prefix)",
            "print('ok', flarebus.__version__)",
        ])
        result = installed.run([str(installed.python), "-c", "import sys\n" + code],
                               cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("ok ")

    def test_packaged_rules_check_and_replay(self, installed: Installed, tmp_path: Path) -> None:
        """The rule files and schemas ship as package data: `check` and `replay` run on them."""
        code = "from flarebus.rules import default_rules_file; print(default_rules_file())"
        default = installed.run([str(installed.python), "-c", code], cwd=tmp_path).stdout.strip()
        assert default.startswith(str(installed.venv)), default
        check = installed.run(installed.flarebus("check", default), cwd=tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        samples = tmp_path / "s.jsonl"
        samples.write_text("".join(
            json.dumps({"name": "cpu.usage", "value": v, "ts": 1763762400 + 10 * i}) + "\n"
            for i, v in enumerate([50, 95, 95, 95, 95])))
        rule = tmp_path / "cpu.yaml"
        rule.write_text("rules:\n  - name: high-cpu\n    metric: cpu.usage\n"
                        "    when: \"> 80\"\n    for: 30s\n")
        replay = installed.run(installed.flarebus("replay", "--rules", str(rule), str(samples)),
                               cwd=tmp_path)
        assert replay.returncode == 0, replay.stderr
        (trigger,) = [json.loads(line) for line in replay.stdout.splitlines()]
        assert (trigger["rule"], trigger["state"], trigger["at"]) == (
            "high-cpu", "firing", 1763762440)
