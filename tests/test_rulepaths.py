"""The one rule-file walker (engine/language/rulepaths.py) behind load, check, test and reload."""

from __future__ import annotations

from pathlib import Path

from flarebus.engine.language.rulepaths import expand_paths
from flarebus.engine.service.reload import snapshot


def tree(root: Path) -> Path:
    for name in ("b.yaml", "a.yml", "sub/c.yaml", "notes.txt", "sub/d.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("rules: []\n")
    (root / "dir.yaml").mkdir()  # a directory with a rule suffix is not a file
    return root


def test_a_directory_gives_its_yaml_files_recursively_and_sorted(tmp_path: Path) -> None:
    """Only *.yaml / *.yml files, subdirectories included, in one stable order."""
    files, problems = expand_paths([tree(tmp_path)])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.yml", "b.yaml",
                                                                  "sub/c.yaml"]
    assert problems == []


def test_a_configmap_volume_gives_each_file_once(tmp_path: Path) -> None:
    """Kubernetes' layout (name -> ..data/name, ..data -> ..<timestamp>/): one file, no
    duplicate rules; a hidden file (an editor's leftover) is skipped too."""
    stamp = tmp_path / "..2026_12_01_22_00_00.1"
    stamp.mkdir()
    (stamp / "default.yaml").write_text("rules: []\n")
    (tmp_path / "..data").symlink_to(stamp.name)
    (tmp_path / "default.yaml").symlink_to("..data/default.yaml")
    (tmp_path / ".default.yaml.swp.yaml").write_text("rules: []\n")
    files, problems = expand_paths([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["default.yaml"]
    assert problems == []


def test_a_file_named_explicitly_is_taken_whatever_its_suffix(tmp_path: Path) -> None:
    """A named file is the user's choice; a missing path is a problem, not an exception."""
    tree(tmp_path)
    files, problems = expand_paths([tmp_path / "notes.txt", tmp_path / "gone.yaml"])
    assert files == [tmp_path / "notes.txt"]
    assert [str(p) for p in problems] == [f"{tmp_path / 'gone.yaml'}:1:1: no such file or "
                                          "directory"]


def test_reload_watches_exactly_the_files_the_loader_reads(tmp_path: Path) -> None:
    """The hot-reload snapshot covers the walker's files, no more (a vanished path drops out)."""
    paths = [tree(tmp_path), tmp_path / "gone.yaml"]
    assert sorted(snapshot(paths)) == sorted(str(p) for p in expand_paths(paths)[0])
