"""schemas/*.schema.json are generated from the Structs, and a stale file fails the build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from flarebus import schemas
from flarebus.schemas import generate
from tests.support import ROOT

SCHEMA_DIR = ROOT / "schemas"


def run_generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flarebus.schemas.generate", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


def copy_schemas(folder: Path) -> None:
    for path in SCHEMA_DIR.glob("*.schema.json"):
        shutil.copy(path, folder / path.name)


class TestCheckedIn:
    """The files in schemas/ are what the generator writes today (the CI check)."""

    def test_no_file_is_stale(self) -> None:
        """Regenerating changes nothing; if this fails, run python -m flarebus.schemas.generate."""
        assert generate.stale() == {}

    @pytest.mark.parametrize("name", schemas.NAMES)
    def test_schema_is_valid_and_named(self, name: str) -> None:
        """Each is a valid Draft 2020-12 schema with the $schema, $id and title editors use."""
        schema = schemas.load(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"https://flarebus.dev/schemas/{name}.schema.json"
        assert schema["title"] and schema["description"]

    def test_every_name_is_generated(self) -> None:
        """The generator covers exactly the schemas the package ships."""
        assert set(generate.SCHEMAS) == set(schemas.NAMES)


class TestCheckCommand:
    """`python -m flarebus.schemas.generate --check` is what CI runs."""

    def test_stale_file_fails_with_a_diff(self, tmp_path: Path) -> None:
        """An edited (stale) file: exit 1, a diff naming it, and how to fix it."""
        copy_schemas(tmp_path)
        path = tmp_path / "rule.schema.json"
        schema = json.loads(path.read_text())
        schema["description"] = "hand-edited"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        result = run_generate("--check", "--dir", str(tmp_path))
        assert result.returncode == 1
        assert f"--- {path} (checked in)" in result.stdout
        assert '+  "description": "A list of rules.' in result.stdout
        assert "stale: rule; run python -m flarebus.schemas.generate" in result.stderr

    def test_missing_file_fails(self, tmp_path: Path) -> None:
        """A schema that was never generated is stale too."""
        copy_schemas(tmp_path)
        (tmp_path / "trigger.schema.json").unlink()
        result = run_generate("--check", "--dir", str(tmp_path))
        assert result.returncode == 1 and "stale: trigger" in result.stderr

    def test_generate_then_check_passes(self, tmp_path: Path) -> None:
        """Writing the files into an empty folder makes the check pass there."""
        assert run_generate("--dir", str(tmp_path)).returncode == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            f"{name}.schema.json" for name in schemas.NAMES)
        result = run_generate("--check", "--dir", str(tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_load_imports_none_of_the_structs() -> None:
    """schemas.load reads the files; the Struct modules stay out of its import path."""
    code = ("import sys; from flarebus import schemas; schemas.load('rule'); "
            "print(sorted(m for m in sys.modules if m.startswith('flarebus')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert json.loads(result.stdout.replace("'", '"')) == ["flarebus", "flarebus.schemas"]
