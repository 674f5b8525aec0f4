"""The syntax tree of an expression. Every node remembers ``pos``, its offset in the text.

Frozen dataclasses: a compiled rule holds its tree, and rules are immutable
(a reload builds new ones). The tree is what both the incremental runtime
(nodes.py) and the from-scratch reference of the tests walk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

MatchOp = Literal["=", "!=", "=~", "!~"]
BinOp = Literal["+", "-", "*", "/"]
AggOp = Literal["sum", "avg", "min", "max", "count"]


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    """``label op "value"``; regexes are anchored and an absent label reads as ``""``."""

    label: str
    op: MatchOp
    value: str
    pos: int = 0
    pattern: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        found = self.pattern.fullmatch(actual) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True, slots=True)
class Number:
    """A number; the checker folds scalar arithmetic (``4 * 3600``) into one."""

    value: float
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Selector:
    """``name{matchers}``; ``range`` (seconds) makes it a range vector ``name{...}[5m]``."""

    name: str | None
    matchers: tuple[LabelMatcher, ...]
    range: float | None = None
    pos: int = 0

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        if self.name is not None and name != self.name:
            return False
        for m in self.matchers:
            actual = name if m.label == "__name__" else labels.get(m.label, "")
            if not m.matches(actual):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Binary:
    """``lhs op rhs``; ``on`` or ``ignoring`` (never both) narrows vector matching.

    ``-x`` is ``0 - x`` (it differs from PromQL's unary minus only in the sign of a zero).
    """

    op: BinOp
    lhs: Expr
    rhs: Expr
    on: tuple[str, ...] | None = None
    ignoring: tuple[str, ...] | None = None
    pos: int = 0
    on_pos: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Aggregate:
    """``op by (labels) (expr)``; ``without`` says the labels are the ones dropped."""

    op: AggOp
    expr: Expr
    labels: tuple[str, ...] = ()
    without: bool = False
    pos: int = 0


@dataclass(frozen=True, slots=True)
class Call:
    """A function call: ``rate(x[5m])``, ``histogram_quantile(0.99, ...)``, ``absent(x)``."""

    fn: str
    args: tuple[Expr, ...]
    pos: int = 0
    arg_pos: tuple[int, ...] = ()


Expr = Number | Selector | Binary | Aggregate | Call
