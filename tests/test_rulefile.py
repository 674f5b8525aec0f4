"""Rule files: schema and semantic checks, exact compiler-style messages, `flarebus check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from flarebus import rules as packaged
from flarebus.engine.language import compiler
from flarebus.engine.language.rulefile import load_rules, load_rules_text
from flarebus.engine.language.thresholds import overlap, parse_threshold, stricter
from flarebus.errors import InvalidFileError
from tests.support import DATA, ROOT, run_flarebus

BAD = DATA / "rules"

EXPECTED_BAD_FIELDS = [
    "tests/data/rules/bad_fields.yaml:5:10: rule 'high-cpu': for: \"30 sec\" is not a duration "
    "(use 30s, 1m30s, 500ms)",
    "tests/data/rules/bad_fields.yaml:6:5: rule 'high-cpu': keep_firng_for: unknown key; "
    "did you mean 'keep_firing_for'?",
    "tests/data/rules/bad_fields.yaml:8:11: rule 'bad threshold': name: \"bad threshold\" is "
    "not a valid name (letters, digits, _ and - only)",
    "tests/data/rules/bad_fields.yaml:10:11: rule 'bad threshold': when: \"above 80\" is not a "
    "threshold (use \"> 80\", \"<= 0.5\", \"!= 0\"; quote it in YAML)",
    "tests/data/rules/bad_fields.yaml:11:5: rule 'no-metric': missing required key 'metric' "
    "(or 'stack' for a stack rule, 'expr' for an expression)",
    "tests/data/rules/bad_fields.yaml:14:13: rule 'both': metric: \"cpu.usage\" cannot be used "
    "together with stack: (a rule reads a metric or stack samples, not both)",
    "tests/data/rules/bad_fields.yaml:20:18: rule 'reducer': reduce.fn: \"median\" is not one "
    "of: avg, min, max, sum, count, rate, p50, p90, p99",
    "tests/data/rules/bad_fields.yaml:21:32: rule 'reducer': missing.then: \"ignore\" is not "
    "one of: resolve, keep, fire",
]

EXPECTED_BAD_SEMANTICS = [
    "tests/data/rules/bad_semantics.yaml:5:12: rule 'overlap': clear: \"< 90\" overlaps when "
    "\"> 80\" (both hold for 85); clear must only hold where when does not, e.g. \"< 70\" for "
    "\"> 80\"",
    "tests/data/rules/bad_semantics.yaml:10:16: rule 'weak-stage': escalate[0].when: \"> 70\" is "
    "not stricter than when \"> 80\" (every value it passes must pass the base, and fewer of "
    "them: e.g. \"> 95\" for \"> 80\")",
    "tests/data/rules/bad_semantics.yaml:13:20: rule 'bad-regex': labels.host: regex \"web-((\" "
    "does not compile: missing ), unterminated subpattern at position 5",
    "tests/data/rules/bad_semantics.yaml:19:16: rule 'bad-template': annotations.summary: "
    "unknown template field {vaule}; did you mean {value}?",
    "tests/data/rules/bad_semantics.yaml:20:14: rule 'bad-template': annotations.other: bad "
    "template: Unknown format code 'q' for object of type 'float'",
    "tests/data/rules/bad_semantics.yaml:24:10: rule 'units': for: '1s1m' is not a duration "
    "(use 30s, 1m30s, 500ms): units must go largest first, once each",
    "tests/data/rules/bad_semantics.yaml:25:13: rule 'units': repeat: must be longer than 0s",
    "tests/data/rules/bad_semantics.yaml:26:11: rule 'overlap': duplicate rule name; first "
    "defined at tests/data/rules/bad_semantics.yaml:2",
]

EXPECTED_OTHERS = [
    "tests/data/rules/bad_top.yaml:1:1: groups: unknown key; allowed: rules",
    "tests/data/rules/bad_top.yaml:1:1: missing required key 'rules'",
    "tests/data/rules/bad_yaml.yaml:4:13: YAML syntax: did not find expected comment or line "
    "break; quote thresholds: when: \"> 80\"",
]


BASE_RULE = 'rules:\n  - name: r\n    metric: cpu.usage\n    when: "> 80"\n'


def _problems(*paths: str) -> list[str]:
    with pytest.raises(InvalidFileError) as info:
        load_rules([ROOT / p for p in paths])
    return [str(p).replace(str(ROOT) + "/", "") for p in info.value.problems]


@pytest.mark.parametrize(("name", "expected"), [
    ("bad_fields.yaml", EXPECTED_BAD_FIELDS),
    ("bad_semantics.yaml", EXPECTED_BAD_SEMANTICS),
])
def test_each_bad_rule_gives_its_exact_message(name: str, expected: list[str]) -> None:
    """Every bad-rule case: one exact line with file:line:col, rule name and hint."""
    assert _problems(f"tests/data/rules/{name}") == expected


def test_check_reports_all_problems_of_all_files_in_one_run() -> None:
    """`flarebus check DIR` prints every problem of every file and exits 1."""
    result = run_flarebus("check", "tests/data/rules")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines == EXPECTED_BAD_FIELDS + EXPECTED_BAD_SEMANTICS + EXPECTED_OTHERS
    assert "19 problems found" in result.stderr
    assert "valid under" not in result.stdout  # never a schema dump


def test_packaged_rules_pass_check() -> None:
    """rules/ (default set, examples, tests) passes `flarebus check` with a summary line."""
    result = run_flarebus("check", str(packaged.default_rules_dir()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: ")
    assert "rule test file" in result.stdout


def test_default_rules_watch_the_system_sampler() -> None:
    """The default set has a heartbeat rule that fires within a minute and repeats."""
    rules = load_rules([packaged.default_rules_file()])
    heartbeat = rules.get("flarebus-heartbeat")
    assert heartbeat is not None and heartbeat.metric == "flarebus.heartbeat"
    assert heartbeat.for_ <= 30 and heartbeat.repeat
    assert {r.metric for r in rules.rules} >= {"system.cpu.percent", "system.memory.percent",
                                              "system.load1"}


def test_check_validates_config_files(tmp_path: Path) -> None:
    """A config file (by its keys, or --config) is validated too, with positions."""
    config = tmp_path / "flarebus.yaml"
    config.write_text("nats:\n  servers: nats://127.0.0.1:4222\nworker:\n  concurency: 3\n")
    result = run_flarebus("check", str(config))
    assert result.returncode == 1
    assert f"{config}:4:3: worker.concurency: unknown key; did you mean 'concurrency'?" \
        in result.stdout
    good = tmp_path / "good.yaml"
    good.write_text("worker:\n  concurrency: 3\n")
    result = run_flarebus("check", "--config", str(good), str(ROOT / "rules/default.yaml"))
    assert result.returncode == 0, result.stdout
    assert "1 config file" in result.stdout


def test_missing_path_is_a_problem() -> None:
    """A path that does not exist is reported, not a traceback."""
    result = run_flarebus("check", "no/such/dir")
    assert result.returncode == 1
    assert "no/such/dir:1:1: no such file or directory" in result.stdout


def test_rule_defaults_and_compiled_fields() -> None:
    """Defaults (for 0s, missing 5m resolve, severity warning, no actions) and parsing."""
    rules = load_rules_text("""
rules:
  - name: a
    metric: cpu.usage
    labels: {host: "~web-.*", env: prod, canary: null}
    when: ">= 80.5"
    actions: [log, {plugin: http, config: {url: "http://x"}}]
  - name: b
    enabled: false
    stack: {source: api, frame: "db.*"}
    when: "> 0.3"
""")
    a, b = rules.rules
    assert (a.for_, a.missing.after, a.missing.then, a.severity) == (0.0, 300.0, "resolve",
                                                                      "warning")
    assert a.when.text == ">= 80.5" and a.when.test(80.5) and not a.when.test(80.4)
    assert [x.plugin for x in a.actions] == ["log", "http"]
    assert a.actions[1].config == {"url": "http://x"}
    assert [m.matches({"host": "web-1", "env": "prod"}) for m in a.matchers] == [True] * 3
    assert not a.matchers[2].matches({"canary": "yes"})
    assert b.metric is None and b.stack is not None and b.stack.measure == "share"
    assert rules.enabled() == (a,)


def test_fingerprint_changes_only_with_the_definition() -> None:
    """Equal definitions (even reformatted) share a fingerprint; any change alters it."""
    one = load_rules_text("rules:\n  - {name: a, metric: m, when: '> 1', for: 1s}\n").rules[0]
    same = load_rules_text("rules:\n  - name: a\n    for: 1s\n    when: '> 1'\n    metric: m\n"
                           ).rules[0]
    other = load_rules_text("rules:\n  - {name: a, metric: m, when: '> 1', for: 2s}\n").rules[0]
    assert one.fingerprint == same.fingerprint != other.fingerprint


@pytest.mark.parametrize(("stage", "base", "expected"), [
    ("> 95", "> 80", True), (">= 80", "> 80", False), ("> 80", ">= 80", True),
    ("> 80", "> 80", False), ("< 5", "< 10", True), ("< 15", "< 10", False),
    ("== 100", "> 80", True), ("!= 1", "> 80", False), ("> 90", "!= 0", True),
])
def test_stricter_is_a_strict_subset(stage: str, base: str, expected: bool) -> None:
    """An escalation stage is stricter when it passes a strict subset of the base's values."""
    assert stricter(parse_threshold(stage), parse_threshold(base)) is expected


@pytest.mark.parametrize(("when", "clear", "overlaps"), [
    ("> 80", "< 70", False), ("> 80", "<= 80", False), ("> 80", "< 81", True),
    (">= 80", "<= 80", True), ("== 0", "!= 0", False), ("!= 0", "> 5", True),
])
def test_clear_must_not_overlap_when(when: str, clear: str, overlaps: bool) -> None:
    """clear is consistent with when exactly when no value satisfies both."""
    assert (overlap(parse_threshold(when), parse_threshold(clear)) is not None) is overlaps


class TestEveryKindOfMistake:
    """Each kind of mistake the decoder finds names file:line:col, the rule and the field."""

    @pytest.mark.parametrize(("lines", "expected"), [
        ("missing: {after: 5m, than: keep}",
         ["5:26: rule 'r': missing.than: unknown key; did you mean 'then'?"]),
        ('enabled: "yes"', ["5:14: rule 'r': enabled: expected true or false, got \"yes\""]),
        ("missing: 5m", ["5:14: rule 'r': missing: expected a mapping, got \"5m\""]),
        ("for: 30", ["5:10: rule 'r': for: 30 is not a duration (use 30s, 1m30s, 500ms)"]),
        ("reduce: {fn: avg, over: 0s}", ["5:29: rule 'r': reduce.over: must be longer than 0s"]),
        ('clear: "< 1e999"', ["5:12: rule 'r': clear: '< 1e999': the number is too large"]),
        ("labels: {1host: a}", ["5:14: rule 'r': labels.1host: \"1host\" is not a label name"]),
        ("labels: {host: [a]}", ["5:20: rule 'r': labels.host: [\"a\"] is not a label matcher "
                                 "(use a value, \"~regex\", or null for absent)"]),
        ("actions: [3]", ["5:15: rule 'r': actions[0]: 3 is not valid here: expected a plugin "
                          "name, or {plugin: NAME, config: {...}}"]),
        ("actions: [{plugin: http, confg: {}}]",
         ["5:30: rule 'r': actions[0].confg: unknown key; did you mean 'config'?"]),
        ('actions: [""]', ["5:15: rule 'r': actions[0]: must not be empty"]),
        ("escalate: [{for: 1m}]", ["5:16: rule 'r': escalate[0]: missing required key 'when'"]),
        ('escalate: [{when: "> 90", for: soon}]',
         ["5:36: rule 'r': escalate[0].for: \"soon\" is not a duration (use 30s, 1m30s, 500ms)"]),
        ("add_labels: {team: 3}", ["5:24: rule 'r': add_labels.team: expected a string, got 3"]),
        ('stack: {source: api, frame: "~db("}', [
            "3:13: rule 'r': metric: \"cpu.usage\" cannot be used together with stack: (a rule "
            "reads a metric or stack samples, not both)",
            "5:33: rule 'r': stack.frame: regex \"db(\" does not compile: missing ), "
            "unterminated subpattern at position 2"]),
    ])
    def test_message(self, lines: str, expected: list[str]) -> None:
        """One line per mistake, exactly, at the offending key or value."""
        with pytest.raises(InvalidFileError) as info:
            load_rules_text(BASE_RULE + "    " + lines + "\n", "r.yaml")
        assert [str(p) for p in info.value.problems] == [f"r.yaml:{e}" for e in expected]

    @pytest.mark.parametrize(("text", "expected"), [
        ('rules:\n  - metric: m\n    when: "> 1"\n', "2:5: rules[0]: missing required key 'name'"),
        ("rules:\n  - 3\n", "2:5: rules[0]: expected a mapping, got 3"),
        ("rules: {}\n", "1:8: rules: expected a list, got {}"),
        ("- a\n", '1:1: expected a mapping, got ["a"]'),
        ("rules: []\nextra: 1\n", "2:1: extra: unknown key; allowed: rules"),
    ])
    def test_outside_a_named_rule(self, text: str, expected: str) -> None:
        """Without a rule name to put first, the message names the field from the top."""
        with pytest.raises(InvalidFileError) as info:
            load_rules_text(text, "r.yaml")
        assert [str(p) for p in info.value.problems] == [f"r.yaml:{expected}"]

    def test_wrong_values_do_not_hide_the_checks_past_the_types(self) -> None:
        """A rule with a bad value still gets its other fields checked: all in one run."""
        with pytest.raises(InvalidFileError) as info:
            load_rules_text(BASE_RULE + '    for: soon\n    clear: "< 90"\n'
                            '    labels: {host: "~(("}\n    claer: "< 1"\n', "r.yaml")
        assert [str(p).split(": ", 2)[2].split(":")[0] for p in info.value.problems] == [
            "for", "clear", "labels.host", "claer"]


class TestCompiling:
    """A decoded rule becomes the evaluator's Rule, and nothing there is ever swallowed."""

    def test_a_compile_bug_is_a_crash_not_a_dropped_rule(self,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
        """An exception while compiling a valid rule surfaces as itself, not as a problem."""
        def broken(label: str, spec: str | None) -> None:
            raise KeyError("a bug in the compiler")

        monkeypatch.setattr(compiler, "parse_matcher", broken)
        with pytest.raises(KeyError, match="a bug in the compiler"):
            load_rules_text(BASE_RULE + "    labels: {host: web-1}\n")

    def test_values_are_plain_and_stages_inherit(self) -> None:
        """Durations are plain floats (msgspec can encode them); stages inherit for and actions."""
        rule = load_rules_text(BASE_RULE + "    for: 1m30s\n    actions: [log]\n"
                               "    reduce: {fn: avg, over: 1m}\n"
                               '    escalate: [{when: "> 95"}]\n').rules[0]
        stage = rule.escalate[0]
        assert (rule.for_, rule.missing.after, rule.reduce and rule.reduce.over) == (90, 300, 60)
        assert {type(v) for v in (rule.for_, rule.missing.after, stage.for_)} == {float}
        assert rule.reduce is not None and type(rule.reduce.over) is float
        assert (stage.for_, stage.severity, stage.actions) == (90.0, "critical", rule.actions)
        assert stage.when.text == "> 95" and stage.clear is None
