"""Writes schemas/*.schema.json from the Structs they describe; ``--check`` is the CI check.

    python -m flarebus.schemas.generate           # rewrite the files
    python -m flarebus.schemas.generate --check   # exit 1, with a diff, if one is stale

The Structs are the one definition of each file and message: msgspec decodes
with them, and these schemas (for editors, and for other languages on the bus)
are generated from them, so the two cannot drift. A schema says everything
the decoder checks that JSON Schema can say; what it cannot (a regex that
compiles, a template that renders, thresholds that overlap) is checked when
the file loads. Only this tool imports the Struct modules: ``schemas.load``
reads the generated files and imports nothing of flarebus.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from flarebus.durations import DURATION_HINT, format_duration
from flarebus.typed import schema_hook

HERE = Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE_URL = "https://flarebus.dev/schemas/"


def _rule() -> Any:
    from flarebus.engine.language.ruleformat import RuleFile
    return RuleFile


def _config() -> Any:
    from flarebus.config import ConfigFile
    return ConfigFile


def _metric_sample() -> Any:
    from flarebus.events import MetricSample
    return MetricSample | list[MetricSample]


def _stack_sample() -> Any:
    from flarebus.events import StackSample
    return StackSample | list[StackSample]


def _trigger() -> Any:
    from flarebus.events import Trigger
    return Trigger


#: name -> (the type, title, description; None takes the root Struct's docstring)
SCHEMAS: dict[str, tuple[Callable[[], Any], str, str | None]] = {
    "metric_sample": (_metric_sample, "MetricSample message",
                      "A metric sample, or a batch (a JSON array) of them, on subject "
                      "metrics.<name>."),
    "stack_sample": (_stack_sample, "StackSample message",
                     "Sampled call stacks (root frame first) on subject stacks.<source>; a "
                     "JSON array is a batch."),
    "trigger": (_trigger, "Trigger",
                "Published by the engine on triggers.<rule> (JetStream stream "
                "FLAREBUS_TRIGGERS) when a rule fires or resolves."),
    "config": (_config, "flarebus config file (flarebus.yaml)", None),
    "rule": (_rule, "flarebus rule file", None),
}


def build(name: str) -> dict[str, Any]:
    """The schema called ``name``, as the checked-in file holds it."""
    make, title, description = SCHEMAS[name]
    (root,), defs = msgspec.json.schema_components([make()], schema_hook=schema_hook)
    ref = root.get("$ref", "")
    if ref.startswith("#/$defs/"):  # a Struct at the top: the file itself is that object
        root = defs.pop(ref.removeprefix("#/$defs/"))
        root.pop("title", None)
    if description is None:
        description = root.pop("description")
    else:
        root.pop("description", None)
    schema = {"$schema": DRAFT, "$id": f"{BASE_URL}{name}.schema.json", "title": title,
              "description": description, **root}
    if defs:
        schema["$defs"] = defs
    tidy: dict[str, Any] = _tidy(schema)
    return tidy


def _tidy(node: Any) -> Any:
    """Presentation only: one-line descriptions, durations' defaults as text, no empty lists."""
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _tidy(value) for key, value in node.items()}
    if isinstance(out.get("description"), str):
        out["description"] = " ".join(out["description"].split())
    if out.get("x-hint") == DURATION_HINT and isinstance(out.get("default"), int | float):
        out["default"] = format_duration(out["default"])
    if out.get("required") == []:
        del out["required"]
    return out


def render(name: str) -> str:
    """The file's text: indented JSON, with what fits in a line on one line (as if by hand)."""
    return _dumps(build(name)) + "\n"


def _dumps(node: Any, level: int = 0, used: int = 0) -> str:
    flat = json.dumps(node, ensure_ascii=False)
    if not isinstance(node, dict | list) or not node or 2 * level + used + len(flat) <= 100:
        return flat
    pad = "  " * (level + 1)
    if isinstance(node, dict):
        items = []
        for key, value in node.items():
            head = f"{json.dumps(key, ensure_ascii=False)}: "
            items.append(pad + head + _dumps(value, level + 1, len(head)))
        body, ends = ",\n".join(items), "{}"
    else:
        body, ends = ",\n".join(pad + _dumps(value, level + 1) for value in node), "[]"
    return f"{ends[0]}\n{body}\n{'  ' * level}{ends[1]}"


def path_of(name: str, folder: Path = HERE) -> Path:
    return folder / f"{name}.schema.json"


def stale(folder: Path = HERE) -> dict[str, str]:
    """name -> unified diff, for each file in ``folder`` that differs from what is generated."""
    out = {}
    for name in SCHEMAS:
        path = path_of(name, folder)
        current = path.read_text("utf-8") if path.is_file() else ""
        wanted = render(name)
        if current != wanted:
            out[name] = "".join(difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True),
                f"{path} (checked in)", f"{path} (generated)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flarebus.schemas.generate",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a diff when a file is stale")
    parser.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        diffs = stale(args.dir)
        for diff in diffs.values():
            sys.stdout.write(diff)
        if diffs:
            print(f"stale: {', '.join(diffs)}; run python -m flarebus.schemas.generate",
                  file=sys.stderr)
        return 1 if diffs else 0
    for name in SCHEMAS:
        path_of(name, args.dir).write_text(render(name), "utf-8")
    print(f"wrote {len(SCHEMAS)} schemas to {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
