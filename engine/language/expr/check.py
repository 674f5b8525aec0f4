"""Types and static checks of a parsed expression, and the compiled ``Program``.

PromQL's types: a number is a scalar, a selector an instant vector, a selector
with ``[5m]`` a range vector. A rule's expression must give an instant vector;
a range vector where an instant one is needed, an unknown function, a wrong
number of arguments, and an ``on(...)`` label that one side can never carry
(because ``sum by (...)`` kept only other labels) are ExprErrors at the
offending token's offset, which the rule loader turns into file:line:col.

Scalar sub-expressions (``4*3600``) are folded into numbers here, so the
runtime only ever sees vectors and constants.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from flarebus.engine.language.expr.ast import (
    Aggregate,
    Binary,
    Call,
    Expr,
    Number,
    Selector,
)
from flarebus.engine.language.expr.functions import FUNCTIONS, arithmetic
from flarebus.engine.language.expr.lexer import ExprError
from flarebus.engine.language.expr.parser import parse

_KIND_WORDS = {"scalar": "a number", "instant": "an instant vector (e.g. x)",
               "range": "a range vector (e.g. x[5m])"}


@dataclass(frozen=True, slots=True)
class Program:
    """A checked expression: its (folded) tree, what it reads, and how it may be sharded.

    ``cross_series`` is true when one output series can depend on several input
    series (aggregations, vector matching, ``absent``, ``histogram_quantile``):
    such a rule needs every input series on one engine (see ``Rule.partition``).
    """

    text: str
    tree: Expr
    inputs: frozenset[str]
    cross_series: bool


def compile_expr(text: str) -> Program:
    """Parse and check ``text``; ExprError at the first problem."""
    tree = parse(text)
    checker = _Checker()
    kind, folded = checker.visit(tree)
    if kind != "instant":
        raise ExprError(0, f"an expr must give an instant vector, not {_KIND_WORDS[kind]}")
    return Program(text, folded, frozenset(checker.inputs), checker.cross)


def _labels_of(node: Expr) -> frozenset[str] | None:
    """The labels every series of ``node`` can carry at most; None when any label may."""
    if isinstance(node, Aggregate):
        return None if node.without else frozenset(node.labels)
    if isinstance(node, Binary):
        if isinstance(node.lhs, Number):
            return _labels_of(node.rhs)
        if node.on is not None and not isinstance(node.rhs, Number):
            return frozenset(node.on)
        return _labels_of(node.lhs)
    if isinstance(node, Call):
        if node.fn == "absent":
            arg = node.args[0]
            return frozenset(m.label for m in arg.matchers if m.op == "=") \
                if isinstance(arg, Selector) else frozenset()
        inner = next((a for a in node.args if not isinstance(a, Number)), None)
        labels = _labels_of(inner) if inner is not None else frozenset()
        if node.fn == "histogram_quantile" and labels is not None:
            return labels - {"le"}
        return labels
    return None


class _Checker:
    def __init__(self) -> None:
        self.inputs: set[str] = set()
        self.cross = False

    def visit(self, node: Expr) -> tuple[str, Expr]:
        if isinstance(node, Number):
            return "scalar", node
        if isinstance(node, Selector):
            assert node.name is not None
            self.inputs.add(node.name)
            return ("range" if node.range is not None else "instant"), node
        if isinstance(node, Binary):
            return self.binary(node)
        if isinstance(node, Aggregate):
            self.cross = True
            kind, inner = self.visit(node.expr)
            if kind != "instant":
                raise ExprError(node.expr.pos,
                                f"{node.op} needs an instant vector, not {_KIND_WORDS[kind]}")
            return "instant", Aggregate(node.op, inner, node.labels, node.without, node.pos)
        return self.call(node)

    def instant_or_scalar(self, node: Expr, what: str) -> tuple[str, Expr]:
        kind, folded = self.visit(node)
        if kind == "range":
            raise ExprError(node.pos, f"{what} needs an instant vector or a number, not a range "
                                      "vector: use a function over it, e.g. rate(x[5m])")
        return kind, folded

    def binary(self, node: Binary) -> tuple[str, Expr]:
        lkind, lhs = self.instant_or_scalar(node.lhs, node.op)
        rkind, rhs = self.instant_or_scalar(node.rhs, node.op)
        if isinstance(lhs, Number) and isinstance(rhs, Number):
            if node.on is not None or node.ignoring is not None:
                raise ExprError(node.pos, "on/ignoring only apply between two vectors")
            return "scalar", Number(arithmetic(node.op, lhs.value, rhs.value), node.pos)
        folded = Binary(node.op, lhs, rhs, node.on, node.ignoring, node.pos, node.on_pos)
        if lkind == "scalar" or rkind == "scalar":
            if node.on is not None or node.ignoring is not None:
                raise ExprError(node.pos, "on/ignoring only apply between two vectors")
            return "instant", folded
        self.cross = True
        if node.on is not None:
            for side, operand in (("left", lhs), ("right", rhs)):
                carried = _labels_of(operand)
                if carried is None:
                    continue
                for label, pos in zip(node.on, node.on_pos, strict=True):
                    if label not in carried:
                        kept = f"only {', '.join(sorted(carried))}" if carried else "no labels"
                        raise ExprError(pos, f"on({label}) can never match: the {side} side "
                                             f"has {kept}")
        return "instant", folded

    def call(self, node: Call) -> tuple[str, Expr]:
        sig = FUNCTIONS.get(node.fn)
        if sig is None:
            close = difflib.get_close_matches(node.fn, list(FUNCTIONS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ExprError(node.pos, f"unknown function {node.fn}{hint}; the functions are "
                                      f"{', '.join(sorted(FUNCTIONS))}")
        if len(node.args) != len(sig.args):
            raise ExprError(node.pos, f"{node.fn} takes {len(sig.args)} argument"
                                      f"{'s' if len(sig.args) > 1 else ''} "
                                      f"({', '.join(_KIND_WORDS[a] for a in sig.args)}), "
                                      f"not {len(node.args)}")
        args = []
        for want, arg, pos in zip(sig.args, node.args, node.arg_pos, strict=True):
            kind, folded = self.visit(arg)
            if kind != want:
                raise ExprError(pos, f"{node.fn} needs {_KIND_WORDS[want]} here, not "
                                     f"{_KIND_WORDS[kind]}")
            if want == "range" and not isinstance(folded, Selector):
                raise ExprError(pos, f"{node.fn} needs a selector with a range, e.g. x[5m]")
            args.append(folded)
        if node.fn in ("absent", "histogram_quantile"):
            self.cross = True
        if node.fn == "histogram_quantile":
            carried = _labels_of(args[1])
            if carried is not None and "le" not in carried:
                raise ExprError(node.arg_pos[1], "histogram_quantile needs the le label: "
                                                 "aggregate with by (le, ...)")
        return "instant", Call(node.fn, tuple(args), node.pos, node.arg_pos)
