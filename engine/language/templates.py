"""Annotation templates: ``"CPU {value} on {labels[host]} above {threshold} for {duration}"``.

Python's ``str.format`` syntax with a fixed set of fields. Templates are checked
when the rule file loads (unknown field, attribute access, bad format spec), so
a typo is a ``flarebus check`` error instead of a broken notification at 3 am.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from typing import Any

from flarebus.durations import format_duration

#: The fields a template may use. labels is used as {labels[name]}.
FIELDS = ("value", "threshold", "duration", "labels", "rule", "severity", "metric_name",
          "state", "active_since", "at")
_formatter = string.Formatter()
#: The largest width or precision a format spec may ask for: ``{value:>200000000}`` would
#: build a 200 MB string for every trigger (and for the check itself), from one line of YAML.
MAX_FORMAT_WIDTH = 256
_NUMBERS = re.compile(r"\d+")


class _Labels(dict[str, str]):
    """A label that the series does not have renders as the empty string."""

    def __missing__(self, key: str) -> str:
        return ""


class Duration(float):
    """Seconds that render as ``1m30s`` by default and as a number with a format spec."""

    def __format__(self, spec: str) -> str:
        return format_duration(self) if not spec else format(float(self), spec)


def check_template(template: str) -> str | None:
    """None when ``template`` is fine, else what is wrong with it (for the loader's message)."""
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        return f"bad template: {exc} (write {{{{ and }}}} for literal braces)"
    for _literal, field_name, _spec, _conversion in parsed:
        if field_name is None:
            continue
        root = field_name.split("[", 1)[0].split(".", 1)[0]
        if root == "" or root.isdigit():
            return "bad template: positional fields {} are not allowed; name one of " \
                   + ", ".join(FIELDS)
        if root not in FIELDS:
            close = difflib.get_close_matches(root, FIELDS, n=1)
            hint = f"did you mean {{{close[0]}}}?" if close else "use one of " + ", ".join(FIELDS)
            return f"unknown template field {{{field_name}}}; {hint}"
        if "." in field_name:
            return f"bad template field {{{field_name}}}: attribute access is not allowed"
        if root == "labels" and field_name == "labels":
            return "bad template field {labels}: name the label, e.g. {labels[host]}"
        if root != "labels" and "[" in field_name:
            return f"bad template field {{{field_name}}}: only labels can be indexed"
        spec = _spec or ""
        if "{" in spec:
            return f"bad template field {{{field_name}:{spec}}}: a format spec may not " \
                   "hold another field"
        if any(int(n) > MAX_FORMAT_WIDTH for n in _NUMBERS.findall(spec)):
            return f"bad template field {{{field_name}:{spec}}}: a width or precision over " \
                   f"{MAX_FORMAT_WIDTH} is not allowed"
    try:
        render(template, sample_context())
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"bad template: {exc}"
    return None


def sample_context() -> dict[str, Any]:
    """Values of the right types to try a template with."""
    return {"value": 93.5, "threshold": "> 80", "duration": Duration(31.0), "labels": _Labels(),
            "rule": "rule", "severity": "warning", "metric_name": "cpu.usage",
            "state": "firing", "active_since": 1763762369.25, "at": 1763762400.25}


def context(*, value: float, threshold: str, duration: float, labels: Mapping[str, str],
            rule: str, severity: str, metric_name: str, state: str, active_since: float,
            at: float) -> dict[str, Any]:
    """The template fields of one trigger."""
    return {"value": value, "threshold": threshold, "duration": Duration(duration),
            "labels": _Labels(labels), "rule": rule, "severity": severity,
            "metric_name": metric_name, "state": state, "active_since": active_since, "at": at}


def render(template: str, fields: Mapping[str, Any]) -> str:
    return template.format_map(fields)
