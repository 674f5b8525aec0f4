"""Rule files: load, validate (schema, then what a schema cannot say), compile to Rules.

Every problem of every file is collected before anything is raised, so one
``flarebus check`` run lists them all, each as ``file:line:col: rule 'x': ...``.
The checks past the schema: unique names across files, durations and
thresholds that parse, regexes that compile, ``clear`` disjoint from ``when``,
escalation stages stricter than the base, annotation templates that render.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from flarebus.durations import parse_duration
from flarebus.engine.language.matchers import Matcher, parse_matcher
from flarebus.engine.language.rulepaths import expand_paths
from flarebus.engine.language.templates import check_template
from flarebus.engine.language.thresholds import Threshold, overlap, parse_threshold, stricter
from flarebus.errors import InvalidFileError, Problem
from flarebus.events import ActionRef
from flarebus.validation import schema_problems, sort_problems, validator
from flarebus.yamlfile import JsonPath, YamlDocument, load_yaml

#: Top-level keys that mark a YAML file as a config file, not a rule file.
CONFIG_KEYS = frozenset({"nats", "engine", "worker", "samplers", "plugins", "telemetry"})
#: Top-level keys that mark a YAML file as a rule test file (`flarebus test`).
TEST_KEYS = frozenset({"tests", "rule_files"})

DEFAULT_MISSING_AFTER = 300.0
DEFAULT_SEVERITY = "warning"
DEFAULT_STAGE_SEVERITY = "critical"


@dataclass(frozen=True, slots=True)
class Reduce:
    """Evaluate ``fn`` over the samples of the last ``over`` seconds instead of each sample."""

    fn: str
    over: float


@dataclass(frozen=True, slots=True)
class Missing:
    """A series with no sample for ``after`` seconds is stale; ``then`` says what that means."""

    after: float = DEFAULT_MISSING_AFTER
    then: str = "resolve"  # resolve | keep | fire


@dataclass(frozen=True, slots=True)
class StackSpec:
    """A stack rule's figure: ``measure`` of the stacks of ``source`` holding a ``frame``."""

    source: str
    frame: str
    measure: str = "share"


@dataclass(frozen=True, slots=True)
class Stage:
    """An escalation stage: a stricter threshold with its own ``for``, severity and actions."""

    when: Threshold
    for_: float
    clear: Threshold | None
    severity: str
    actions: tuple[ActionRef, ...]


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """One compiled rule. ``fingerprint`` changes whenever the definition does."""

    name: str
    fingerprint: str
    metric: str | None
    when: Threshold
    stack: StackSpec | None = None
    matchers: tuple[Matcher, ...] = ()
    for_: float = 0.0
    clear: Threshold | None = None
    keep_firing_for: float = 0.0
    reduce: Reduce | None = None
    missing: Missing = field(default_factory=Missing)
    repeat: float | None = None
    severity: str = DEFAULT_SEVERITY
    add_labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    actions: tuple[ActionRef, ...] = ()
    escalate: tuple[Stage, ...] = ()
    enabled: bool = True
    file: str = "<memory>"
    line: int = 1

    @property
    def source(self) -> str:
        """Where the rule is defined: ``file:line``."""
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of a set of files, in file order; immutable (a reload builds a new one)."""

    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()

    def enabled(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    def get(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


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
        try:
            if text is None and path is not None:
                text = path.read_text(encoding="utf-8")
            lines = (text or "").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        context = lines[problem.line - 2: problem.line] if lines else []
        if problem.message.startswith("YAML syntax") and any(
                _UNQUOTED_THRESHOLD.match(line) for line in context):
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


def _name_at(doc: YamlDocument) -> Any:
    def name_at(path: JsonPath) -> str | None:
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            items = doc.data.get("rules") if isinstance(doc.data, dict) else None
            if isinstance(items, list) and path[1] < len(items):
                item = items[path[1]]
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    return item["name"]
        return None
    return name_at


def compile_document(doc: YamlDocument) -> tuple[list[Rule], list[Problem]]:
    """The valid rules of one parsed file, and the problems of the others."""
    if doc.data is None:
        return [], [doc.problem((), "empty file: a rule file holds `rules:`, a list of rules")]
    problems = [_within_rule(p) for p in schema_problems(doc, "rule", _name_at(doc))]
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("rules"), list):
        return [], problems
    broken = _broken_rules(doc) if problems else set()
    taken = {(p.line, p.column) for p in problems}
    rules: list[Rule] = []
    for i, item in enumerate(doc.data["rules"]):
        if not isinstance(item, dict):
            continue
        checker = _RuleChecker(doc, i, item)
        try:
            rule = checker.compile()
        except (KeyError, TypeError, AttributeError, ValueError):
            rule = None  # a shape the schema already reported; its other checks still count
        problems.extend(p for p in checker.problems if (p.line, p.column) not in taken)
        if rule is not None and i not in broken:
            rules.append(rule)
    return rules, problems


_RULE_PREFIX = re.compile(r"^rules\[\d+\](\.|: )")


def _within_rule(problem: Problem) -> Problem:
    """`rules[3].for: ...` reads `for: ...` once the line already names the rule."""
    if problem.rule is None:
        return problem
    message = _RULE_PREFIX.sub("", problem.message)
    if message == "missing required key 'metric'":
        message = "missing required key 'metric' (or 'stack' for a stack rule)"
    return Problem(problem.file, problem.line, problem.column, message, problem.rule)


def _broken_rules(doc: YamlDocument) -> set[int]:
    """Indexes of the rules the schema rejects (their deeper checks would only repeat it)."""
    out = set()
    for error in validator("rule").iter_errors(doc.data):
        path = tuple(error.absolute_path)
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            out.add(path[1])
    return out


def fingerprint(definition: Any) -> str:
    """A stable hash of a rule's definition: equal fingerprints mean an unchanged rule."""
    data = msgspec.json.encode(definition, order="sorted")
    return hashlib.blake2b(data, digest_size=10).hexdigest()


class _RuleChecker:
    """Compiles rule ``index`` of ``doc``, collecting what is wrong with it."""

    def __init__(self, doc: YamlDocument, index: int, data: dict[str, Any]) -> None:
        self.doc = doc
        self.base: JsonPath = ("rules", index)
        self.data = data
        self.name = str(data.get("name"))
        self.problems: list[Problem] = []

    def problem(self, path: JsonPath, message: str, *, key: bool = False) -> None:
        self.problems.append(self.doc.problem((*self.base, *path), message, key=key,
                                              rule=self.name))

    def duration(self, path: JsonPath, value: Any, default: float) -> float:
        if value is None:
            return default
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(path, f"{_dotted(path)}: {exc}")
            return default

    def positive(self, path: JsonPath, value: Any, default: float) -> float:
        seconds = self.duration(path, value, default)
        if value is not None and seconds <= 0:
            self.problem(path, f"{_dotted(path)}: must be longer than 0s")
        return seconds

    def threshold(self, path: JsonPath, value: Any) -> Threshold | None:
        if value is None:
            return None
        try:
            return parse_threshold(value)
        except ValueError as exc:
            self.problem(path, f"{_dotted(path)}: {exc}")
            return None

    def actions(self, path: JsonPath, items: Any) -> tuple[ActionRef, ...]:
        out = []
        for item in items or []:
            if isinstance(item, str):
                out.append(ActionRef(plugin=item))
            else:
                out.append(ActionRef(plugin=item["plugin"], config=dict(item.get("config") or {})))
        return tuple(out)

    def compile(self) -> Rule | None:
        d = self.data
        when = self.threshold(("when",), d["when"])
        clear = self.threshold(("clear",), d.get("clear"))
        if when is not None and clear is not None:
            self.check_clear(("clear",), when, clear, d["clear"], d["when"])
        matchers = []
        for label, spec in (d.get("labels") or {}).items():
            try:
                matchers.append(parse_matcher(label, spec))
            except re.error as exc:
                self.problem(("labels", label),
                             f"labels.{label}: regex {_q(spec[1:])} does not compile: {exc}")
        stack = None
        if "stack" in d:
            s = d["stack"]
            stack = StackSpec(s["source"], s["frame"], s.get("measure", "share"))
            if stack.frame.startswith("~"):
                try:
                    re.compile(stack.frame[1:])
                except re.error as exc:
                    self.problem(("stack", "frame"), f"stack.frame: regex {_q(stack.frame[1:])} "
                                                     f"does not compile: {exc}")
        for_ = self.duration(("for",), d.get("for"), 0.0)
        keep = self.duration(("keep_firing_for",), d.get("keep_firing_for"), 0.0)
        repeat = self.positive(("repeat",), d.get("repeat"), 0.0) if "repeat" in d else None
        reduce = None
        if "reduce" in d:
            over = self.positive(("reduce", "over"), d["reduce"]["over"], 1.0)
            reduce = Reduce(d["reduce"]["fn"], over)
        m = d.get("missing") or {}
        missing = Missing(self.positive(("missing", "after"), m.get("after"),
                                        DEFAULT_MISSING_AFTER), m.get("then", "resolve"))
        for key, template in (d.get("annotations") or {}).items():
            error = check_template(template)
            if error:
                self.problem(("annotations", key), f"annotations.{key}: {error}")
        actions = self.actions(("actions",), d.get("actions"))
        stages = []
        for i, stage in enumerate(d.get("escalate") or []):
            stage_when = self.threshold(("escalate", i, "when"), stage["when"])
            stage_clear = self.threshold(("escalate", i, "clear"), stage.get("clear"))
            if stage_when is not None and when is not None and not stricter(stage_when, when):
                self.problem(("escalate", i, "when"),
                             f"escalate[{i}].when: {_q(stage['when'])} is not stricter than when "
                             f"{_q(d['when'])} (every value it passes must pass the base, and "
                             f"fewer of them: e.g. \"> 95\" for \"> 80\")")
            if stage_when is not None and stage_clear is not None:
                self.check_clear(("escalate", i, "clear"), stage_when, stage_clear,
                                 stage["clear"], stage["when"])
            stage_for = self.duration(("escalate", i, "for"), stage.get("for"), for_)
            stages.append(Stage(
                when=stage_when or parse_threshold("> 0"), for_=stage_for, clear=stage_clear,
                severity=stage.get("severity", DEFAULT_STAGE_SEVERITY),
                actions=self.actions(("escalate", i, "actions"), stage["actions"])
                if "actions" in stage else actions))
        if self.problems or when is None:
            return None
        return Rule(
            name=d["name"], fingerprint=fingerprint(d), metric=d.get("metric"), when=when,
            stack=stack, matchers=tuple(matchers), for_=for_, clear=clear, keep_firing_for=keep,
            reduce=reduce, missing=missing, repeat=repeat,
            severity=d.get("severity", DEFAULT_SEVERITY),
            add_labels=dict(d.get("add_labels") or {}),
            annotations=dict(d.get("annotations") or {}), actions=actions,
            escalate=tuple(stages), enabled=d.get("enabled", True), file=self.doc.file,
            line=self.doc.position(self.base)[0])

    def check_clear(self, path: JsonPath, when: Threshold, clear: Threshold,
                    clear_text: str, when_text: str) -> None:
        both = overlap(when, clear)
        if both is not None:
            self.problem(path, f"{_dotted(path)}: {_q(clear_text)} overlaps when {_q(when_text)} "
                               f"(both hold for {both:g}); clear must only hold where when "
                               f"does not, e.g. \"< 70\" for \"> 80\"")


def _dotted(path: JsonPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _q(text: str) -> str:
    """Quote a value the way the schema messages do (JSON style)."""
    return json.dumps(text, ensure_ascii=False)
