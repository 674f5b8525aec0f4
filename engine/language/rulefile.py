"""Rule files: find them, decode each rule, collect every problem, compile the rest.

Every problem of every file is collected before anything is raised, so one
``flarebus check`` run lists them all, each as ``file:line:col: rule 'x': ...``.
Each rule is decoded on its own (flarebus.typed: msgspec judges, and the
problems of a rejected rule are all found), then checked past its types
(compiler.check) and compiled. Names must be unique across files. The format
is ruleformat.py; the evaluator's Rule is compiler.py (re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from flarebus import typed
from flarebus.config import ConfigFile
from flarebus.engine.language.compiler import Rule, RuleSet, check, compile_rule, fingerprint
from flarebus.engine.language.expr.check import compile_expr
from flarebus.engine.language.expr.lexer import ExprError
from flarebus.engine.language.ruleformat import (
    RULE_KEYS,
    RuleFile,
    RuleSpec,
    StackSpec,
    shape_issues,
)
from flarebus.engine.language.rulepaths import expand_paths
from flarebus.errors import InvalidFileError, Problem
from flarebus.problems import sort_problems
from flarebus.yamlfile import JsonPath, YamlDocument, load_yaml

__all__ = ["Rule", "RuleSet", "StackSpec", "compile_document", "file_kind",
           "load_rules", "load_rules_text", "with_yaml_hint"]

#: Top-level keys that mark a YAML file as a config file, not a rule file.
CONFIG_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(ConfigFile))
#: Top-level keys that mark a YAML file as a rule test file (`flarebus test`).
TEST_KEYS = frozenset({"tests", "rule_files"})


# ---------------------------------------------------------------- finding files


def file_kind(data: Any) -> str:
    """'config', 'test' or 'rules': what a parsed YAML file is, by its top-level keys."""
    if isinstance(data, dict):
        keys = set(data)
        if keys & TEST_KEYS and "rules" not in keys:
            return "test"
        if keys and keys <= CONFIG_KEYS:
            return "config"
    return "rules"


# ---------------------------------------------------------------------- loading


def load_rules(paths: Sequence[str | Path]) -> RuleSet:
    """Load and check every rule file under ``paths``; InvalidFileError lists ALL problems.

    Inside directories, files that are config or rule-test files are skipped (a
    directory such as ``rules/`` may hold tests beside the rules); a file named
    explicitly must be a rule file.
    """
    files, problems = expand_paths(paths)
    explicit = {str(Path(p)) for p in paths if Path(p).is_file()}
    rules: list[Rule] = []
    loaded: list[str] = []
    seen: dict[str, str] = {}
    for path in files:
        try:
            doc = load_yaml(path)
        except InvalidFileError as exc:
            problems.extend(with_yaml_hint(exc.problems, path))
            continue
        if str(path) not in explicit and file_kind(doc.data) != "rules":
            continue
        file_rules, file_problems = compile_document(doc)
        problems.extend(file_problems)
        problems.extend(_duplicates(doc, seen))
        loaded.append(doc.file)
        names = {r.name for r in rules}
        rules.extend(r for r in file_rules if r.name not in names)
    if problems:
        raise InvalidFileError(sort_problems(problems))
    return RuleSet(tuple(rules), tuple(loaded))


def load_rules_text(text: str, file: str = "<memory>") -> RuleSet:
    """Rules from YAML text (tests, tools); same checks as files."""
    from flarebus.yamlfile import parse_yaml

    try:
        doc = parse_yaml(text, file)
    except InvalidFileError as exc:
        raise InvalidFileError(with_yaml_hint(exc.problems, None, text)) from None
    rules, problems = compile_document(doc)
    problems.extend(_duplicates(doc, {}))
    if problems:
        raise InvalidFileError(sort_problems(problems))
    return RuleSet(tuple(rules), (file,))


_UNQUOTED_THRESHOLD = re.compile(r"^\s*-?\s*(when|clear)\s*:\s*[<>=!]")


def with_yaml_hint(problems: list[Problem], path: Path | None,
                    text: str | None = None) -> list[Problem]:
    """`when: > 80` is a YAML block scalar, not a string: say so instead of a parser riddle."""
    out = []
    for problem in problems:
        if not problem.message.startswith("YAML syntax"):
            out.append(problem)  # nothing to hint: the file (maybe refused as too big) stays unread
            continue
        try:
            if text is None and path is not None:
                text = path.read_text(encoding="utf-8")
            lines = (text or "").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        context = lines[problem.line - 2: problem.line] if lines else []
        if any(_UNQUOTED_THRESHOLD.match(line) for line in context):
            problem = Problem(problem.file, problem.line, problem.column,
                              problem.message + '; quote thresholds: when: "> 80"', problem.rule)
        out.append(problem)
    return out


def _duplicates(doc: YamlDocument, seen: dict[str, str]) -> list[Problem]:
    """A problem for each rule whose name an earlier rule (this file or before) has taken."""
    items = doc.data.get("rules") if isinstance(doc.data, dict) else None
    out = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            continue
        line, column = doc.position(("rules", i, "name"))
        if name in seen:
            out.append(Problem(doc.file, line, column,
                               f"duplicate rule name; first defined at {seen[name]}", name))
        else:
            seen[name] = f"{doc.file}:{line}"
    return out


def compile_document(doc: YamlDocument) -> tuple[list[Rule], list[Problem]]:
    """The valid rules of one parsed file, and the problems of the others."""
    if doc.data is None:
        return [], [doc.problem((), "empty file: a rule file holds `rules:`, a list of rules")]
    items = doc.data.get("rules") if isinstance(doc.data, dict) else None
    if not isinstance(items, list):
        return [], typed.problems(doc, typed.decode(doc.data, RuleFile)[1])
    # The keys beside `rules:`; the rules themselves are decoded one by one below.
    found = typed.problems(doc, typed.decode({**doc.data, "rules": []}, RuleFile)[1])
    rules: list[Rule] = []
    for i, item in enumerate(items):
        rule, rule_problems = _compile_rule(doc, ("rules", i), item)
        found.extend(rule_problems)
        if rule is not None:
            rules.append(rule)
    return rules, found


def _compile_rule(doc: YamlDocument, base: JsonPath,
                  item: Any) -> tuple[Rule | None, list[Problem]]:
    """Rule ``base`` of ``doc``: compiled when it is valid, and its problems."""
    name = item.get("name") if isinstance(item, dict) else None
    spec, issues = typed.decode(item, RuleSpec, path=base)
    if isinstance(item, dict):
        issues += shape_issues(item, base)
        checked = spec if spec is not None else _salvage(item, issues, base)
        if checked is not None:
            issues += check(checked, base)
    if not isinstance(name, str):  # no name to put first: the message names the rule's index
        return None, typed.problems(doc, issues)
    found = typed.problems(doc, issues, base=base, rule=name) + _expr_problems(doc, base, item,
                                                                             name)
    if spec is None or found:
        return None, found
    return compile_rule(spec, fingerprint=fingerprint(item), file=doc.file,
                        line=doc.position(base)[0]), []


def _expr_problems(doc: YamlDocument, base: JsonPath, item: Any, name: str) -> list[Problem]:
    """A mistake in the rule's expr, at the line and column of the offending token."""
    text = item.get("expr") if isinstance(item, dict) else None
    if not isinstance(text, str) or not text:
        return []  # not a string at all: the types said so
    try:
        compile_expr(text)
    except ExprError as exc:
        path = (*base, "expr")
        line, column = doc.position(path)
        before = text[:exc.pos]
        if "\n" not in before:  # one line: the offset is the column (a folded scalar: roughly)
            column += exc.pos + (1 if path in doc.quoted else 0)
        return [Problem(doc.file, line, column, f"expr: {exc.message}", name)]
    return []


def _salvage(item: dict[str, Any], issues: list[typed.Issue],
             base: JsonPath) -> RuleSpec | None:
    """The rule without its bad keys, so the checks that compare fields still run.

    None when what is left is not a rule (its name or `when` is among the bad).
    """
    bad = {issue.path[len(base)] for issue in issues if len(issue.path) > len(base)}
    kept = {key: value for key, value in item.items() if key in RULE_KEYS and key not in bad}
    return typed.decode(kept, RuleSpec, path=base)[0]
