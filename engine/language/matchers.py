"""Label matchers of a rule: an exact value, a regex after ``~``, or absence (null).

As in Prometheus, regexes are anchored (they match the whole value) and a label
that is absent reads as the empty string, so ``host: ""`` and ``host: null`` both
mean "no host label".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label condition. ``pattern`` is set for regex matchers, ``value`` for exact ones."""

    label: str
    value: str | None  # exact value; None means "absent"
    pattern: re.Pattern[str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")
        if self.pattern is not None:
            return self.pattern.fullmatch(actual) is not None
        return actual == (self.value or "")

    @property
    def text(self) -> str:
        if self.pattern is not None:
            return f"{self.label}=~{self.pattern.pattern!r}"
        return f"{self.label}={self.value!r}" if self.value else f"{self.label} absent"


def parse_matcher(label: str, spec: str | None) -> Matcher:
    """``("host", "~web-.*")`` -> regex matcher; re.error for a regex that does not compile."""
    if spec is not None and spec.startswith("~"):
        return Matcher(label, spec, re.compile(spec[1:]))
    return Matcher(label, spec)


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
