"""The docs cannot rot: their marked examples run, and their relative links resolve.

A fenced code block directly below the line ``<!-- doc-test -->`` in README.md or
docs/*.md is a test case:

- ``sh``/``bash``/``shell``: run with ``bash -e``; ``console``: the ``$ `` lines are
  the commands (the other lines are sample output, not compared);
- ``python``/``py``: run with the venv's python;
- ``<!-- doc-test: expect-fail -->``: the block must exit non-zero (error examples);
- ``<!-- doc-test: output -->`` on a console block: every output line it shows must be
  printed (a line ending in ``...`` only has to start one; a ``...`` line is skipped);
  options combine: ``<!-- doc-test: expect-fail, output -->``;
- ``<!-- doc-test: file=NAME -->`` on any block (yaml, json, ...): not run, but written
  to ``NAME`` in the working directory of every later block of the same page, so a
  page can show a rule file and then the command that uses it.

Each block runs in a fresh temp directory holding a copy of the repository's
``rules/``, with the venv's ``bin`` first on PATH and ``FLAREBUS_NATS_URL`` set to
the test session's nats-server; the default address ``nats://127.0.0.1:4222``
written in a block is replaced by that server's URL too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flarebus.servers import DEFAULT_NATS_URL
from tests.support import ROOT

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!--\s*doc-test(?::\s*(?P<options>.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
SHELLS = {"sh", "bash", "shell", "console"}
PYTHONS = {"python", "py", "python3"}
OPTIONS = {"expect-fail", "output", "file"}
BLOCK_TIMEOUT = 60.0
#: commands that run until stopped: a doc-test must bound them with `timeout`
LONG_RUNNING = re.compile(r"\bflarebus\s+(up|engine|worker|nats)\b")
_LEAKY_ENV = re.compile(r"^(FLAREBUS_|OTEL_)|^(PLUGIN_DIR|ACTION_PLUGIN)$")


def display(path: Path) -> str:
    """A page's name as the test ids show it: relative to the repository."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


@dataclass
class Block:
    """One fenced code block of a page, with its doc-test marking."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str = field(repr=False)
    marked: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{display(self.path)}:{self.line}"

    @property
    def expect_fail(self) -> bool:
        return "expect-fail" in self.options

    @property
    def file_name(self) -> str | None:
        return self.options.get("file")


@dataclass
class Page:
    path: Path
    text: str = field(repr=False)
    blocks: list[Block] = field(repr=False)
    problems: list[str] = field(repr=False)  # markers that mark nothing, unclosed fences


def parse_options(text: str | None) -> dict[str, str]:
    """``expect-fail, file=rules.yaml`` -> {"expect-fail": "", "file": "rules.yaml"}."""
    out = {}
    for item in (text or "").split(","):
        key, _, value = item.strip().partition("=")
        if key:
            out[key.strip()] = value.strip()
    return out


def parse_page(path: Path, text: str | None = None) -> Page:
    """Every fenced block of a Markdown page, and whether the line above marks it."""
    text = path.read_text() if text is None else text
    lines = text.splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker and (i + 1 >= len(lines) or not FENCE.match(lines[i + 1])):
            problems.append(f"{display(path)}:{i + 1}: doc-test marker not directly above a "
                            "fenced code block")
        if not fence:
            i += 1
            continue
        start, token = i, fence["fence"]
        close = re.compile(rf"^ {{0,3}}{token[0]}{{{len(token)},}}\s*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            body.append(lines[i][len(fence["indent"]):] if lines[i].startswith(fence["indent"])
                        else lines[i])
            i += 1
        if i >= len(lines):
            problems.append(f"{display(path)}:{start + 1}: code block never closed")
        above = MARKER.match(lines[start - 1]) if start > 0 else None
        blocks.append(Block(path, start + 1, fence["lang"].lower(), "\n".join(body) + "\n",
                            marked=above is not None,
                            options=parse_options(above["options"]) if above else {}))
        i += 1
    return Page(path, text, blocks, problems)


def console_commands(code: str) -> str:
    """The commands of a console transcript: the ``$ `` lines (with their ``\\`` continuations)."""
    out: list[str] = []
    continuing = False
    for line in code.splitlines():
        if line.startswith("$ ") or continuing:
            out.append(line[2:] if line.startswith("$ ") and not continuing else line)
            continuing = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def expected_output(code: str) -> list[str]:
    """The output lines a console transcript shows (``...`` lines are elisions)."""
    out: list[str] = []
    continuing = False
    for line in code.splitlines():
        if line.startswith("$ ") or continuing:
            continuing = line.rstrip().endswith("\\")
        elif line.strip() and line.strip() != "...":
            out.append(line.rstrip())
    return out


def missing_output(expected: list[str], output: str) -> list[str]:
    """Expected lines not in the output; a line ending in ``...`` only has to start one."""
    got = [line.rstrip() for line in output.splitlines()]
    missing = []
    for line in expected:
        if line.endswith("..."):
            prefix = line[:-3].rstrip()
            if not any(g.startswith(prefix) for g in got):
                missing.append(line)
        elif line not in got:
            missing.append(line)
    return missing


def runnable(block: Block) -> str | None:
    """Why a marked block cannot be a test case (None when it can)."""
    unknown = set(block.options) - OPTIONS
    if unknown:
        return f"unknown doc-test option(s) {sorted(unknown)}: use {sorted(OPTIONS)}"
    if block.file_name is not None:
        name = Path(block.file_name)
        ok = block.file_name and not name.is_absolute() and ".." not in name.parts
        return None if ok else f"file={block.file_name}: not a relative path inside the cwd"
    if block.lang not in SHELLS | PYTHONS:
        return f"doc-test on a `{block.lang or 'plain'}` block: only sh/console/python run " \
               "(use `doc-test: file=NAME` to provide a file to later blocks)"
    if "output" in block.options and block.lang != "console":
        return "doc-test: output needs a console block (`$ ` commands, then their output)"
    if block.lang in SHELLS:
        code = console_commands(block.code) if block.lang == "console" else block.code
        for line in code.splitlines():
            if LONG_RUNNING.search(line) and not re.search(r"\btimeout\b", line):
                return f"long-running command without `timeout`: {line.strip()}"
    return None


def all_pages() -> list[Page]:
    return [parse_page(p) for p in DOC_FILES if p.is_file()]


def cases() -> Iterable[object]:
    for page in all_pages():
        for block in page.blocks:
            if block.marked and block.file_name is None:
                yield pytest.param(page, block, id=block.id)


# --------------------------------------------------------------------------- the extractor


class TestExtraction:
    PAGE = "\n".join([
        "# t", "", "<!-- doc-test -->", "```sh", "echo hi", "```", "",
        "```sh", "not marked", "```",
        "<!-- doc-test: expect-fail -->", "```console", "$ false", "output", "```",
        "<!-- doc-test: file=r.yaml -->", "~~~yaml", "rules: []", "~~~",
        "<!-- doc-test -->", "", "```sh", "echo orphan marker", "```",
    ])

    def test_marked_blocks_and_their_options_are_found(self) -> None:
        """Only blocks directly under a marker are marked; options and line numbers are kept."""
        page = parse_page(ROOT / "docs" / "x.md", self.PAGE)
        marked = [(b.line, b.lang, b.expect_fail, b.file_name) for b in page.blocks if b.marked]
        assert marked == [(4, "sh", False, None), (12, "console", True, None),
                          (17, "yaml", False, "r.yaml")]
        assert page.blocks[0].id == "docs/x.md:4"

    def test_a_marker_above_no_block_is_a_problem(self) -> None:
        """A marker separated from its block (here by a blank line) is reported, not ignored."""
        page = parse_page(ROOT / "docs" / "x.md", self.PAGE)
        assert page.problems == [
            "docs/x.md:20: doc-test marker not directly above a fenced code block"]

    def test_console_transcripts_keep_only_commands(self) -> None:
        """`$ ` lines are run, output lines are not."""
        code = "$ flarebus check rules/\nok: 3 rules\n$ echo a \\\n  b\na b\n"
        assert console_commands(code) == "flarebus check rules/\necho a \\\n  b\n"

    def test_shown_output_is_compared_when_asked(self) -> None:
        """With `output`, each shown line must be printed; `...` elides."""
        code = "$ flarebus check bad.yaml\nbad.yaml:5:10: rule 'x': for: ...\n...\nok\n"
        assert expected_output(code) == ["bad.yaml:5:10: rule 'x': for: ...", "ok"]
        printed = "bad.yaml:5:10: rule 'x': for: \"30 sec\" is not a duration\nok\n"
        assert missing_output(expected_output(code), printed) == []
        assert missing_output(expected_output(code), "ok\n") == [expected_output(code)[0]]

    def test_unbounded_long_running_commands_are_refused(self) -> None:
        """`flarebus engine` in a doc-test needs `timeout`, or the suite would hang."""
        block = Block(ROOT / "x.md", 1, "sh", "flarebus engine --rules rules/\n", marked=True)
        assert "timeout" in (runnable(block) or "")
        block.code = "timeout --preserve-status 2 flarebus engine --rules rules/\n"
        assert runnable(block) is None

    def test_misspelt_options_are_refused(self) -> None:
        """`doc-test: expect_fail` is an error, not a block that silently must succeed."""
        block = Block(ROOT / "x.md", 1, "sh", "false\n", marked=True,
                      options=parse_options("expect_fail"))
        assert "unknown doc-test option" in (runnable(block) or "")


def test_doc_test_markers_are_well_placed() -> None:
    """Every doc-test marker in the docs sits directly above a block that can run."""
    problems = [p for page in all_pages() for p in page.problems]
    problems += [f"{b.id}: {why}" for page in all_pages() for b in page.blocks
                 if b.marked and (why := runnable(b))]
    assert problems == []


# --------------------------------------------------------------------------- the examples


def block_env(nats_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not _LEAKY_ENV.search(k)}
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "FLAREBUS_NATS_URL": nats_url, "PYTHONUNBUFFERED": "1"}


def prepare_cwd(tmp: Path, page: Page, block: Block, nats_url: str) -> None:
    """The block's working directory: rules/ and the page's earlier file= blocks."""
    shutil.copytree(ROOT / "rules", tmp / "rules",
                    ignore=shutil.ignore_patterns("__pycache__", "*.py", "py.typed"))
    for earlier in page.blocks:
        if earlier.line >= block.line:
            break
        if earlier.marked and earlier.file_name:
            (tmp / earlier.file_name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / earlier.file_name).write_text(earlier.code.replace(DEFAULT_NATS_URL, nats_url))


@pytest.mark.parametrize(("page", "block"), list(cases()))
def test_doc_example_runs(page: Page, block: Block, nats_url: str, tmp_path: Path) -> None:
    """The marked example runs as written (and fails where it says it fails)."""
    assert runnable(block) is None, runnable(block)
    prepare_cwd(tmp_path, page, block, nats_url)
    code = console_commands(block.code) if block.lang == "console" else block.code
    code = code.replace(DEFAULT_NATS_URL, nats_url)
    if block.lang in PYTHONS:
        argv = [sys.executable, "-c", code]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", code]
    result = subprocess.run(argv, cwd=tmp_path, env=block_env(nats_url), capture_output=True,
                            text=True, timeout=BLOCK_TIMEOUT, check=False)
    shown = f"{block.id} exited {result.returncode}\n--- code:\n{code}" \
            f"--- stdout:\n{result.stdout[-4000:]}\n--- stderr:\n{result.stderr[-4000:]}"
    if block.expect_fail:
        assert result.returncode != 0, shown
    else:
        assert result.returncode == 0, shown
    if "output" in block.options:
        missing = missing_output(expected_output(block.code), result.stdout + result.stderr)
        assert missing == [], f"output lines the doc shows but the command did not print\n{shown}"


# --------------------------------------------------------------------------- links


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
INLINE_CODE = re.compile(r"`+[^`]*`+")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def prose(page: Page, *, inline_code: bool = False) -> str:
    """The page without its code blocks (and inline code), where link syntax means nothing."""
    lines = page.text.splitlines()
    skip = set()
    for block in page.blocks:
        n = block.code.count("\n")
        skip.update(range(block.line - 1, block.line + n + 1))
    return "\n".join(line if inline_code else INLINE_CODE.sub("", line)
                     for i, line in enumerate(lines) if i not in skip)


def anchors(path: Path, current: Page) -> set[str]:
    page = current if path == current.path else parse_page(path)
    return {github_slug(line.lstrip("#")) for line in prose(page, inline_code=True).splitlines()
            if re.match(r"^#{1,6}\s", line)}


def broken_links(page: Page) -> list[str]:
    text = prose(page)
    out = []
    for target in [*LINK.findall(text), *REF_LINK.findall(text)]:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.path.parent / file_part).resolve() if file_part else page.path
        where = display(page.path)
        if file_part and not dest.exists():
            out.append(f"{where}: link to {target}: no such file")
        elif (anchor and (not file_part or dest.suffix == ".md")
              and anchor not in anchors(dest, page)):
            out.append(f"{where}: link to {target}: no heading #{anchor}")
    return out


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link (and #anchor into a Markdown page) points at something that exists."""
    assert broken_links(parse_page(path)) == []


def test_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    """The link check can fail: a missing file and a missing heading are both reported."""
    (tmp_path / "rules.md").write_text("# Rules\n\n## The `for` field\n")
    page = parse_page(tmp_path / "page.md",
                      "# Top\n\nSee [rules](rules.md#the-for-field), [gone](gone.md), "
                      "[x](#nowhere), [y](rules.md#nope) and [web](https://nats.io).\n"
                      "```\n[in code](ignored.md)\n```\n")
    assert broken_links(page) == ["page.md: link to gone.md: no such file",
                                  "page.md: link to #nowhere: no heading #nowhere",
                                  "page.md: link to rules.md#nope: no heading #nope"]
