"""A recursive-descent (Pratt) parser for the expression subset; types are checked in check.py.

Hand-written because no maintained pure-Python PromQL parser reads flarebus'
dotted metric names, and the subset is small: numbers, selectors with
matchers and an optional range, ``+ - * /`` with ``on``/``ignoring``,
aggregations with ``by``/``without`` (before or after the parentheses, as in
PromQL), and function calls. What PromQL has and flarebus does not (comparisons,
``^``, ``%``, ``bool``, ``group_left``, ``offset``, subqueries) is refused with a
message that says so, at its column.
"""

from __future__ import annotations

import math
import re
from typing import cast

from flarebus.durations import parse_duration
from flarebus.engine.language.expr.ast import (
    AggOp,
    Aggregate,
    Binary,
    BinOp,
    Call,
    Expr,
    LabelMatcher,
    MatchOp,
    Number,
    Selector,
)
from flarebus.engine.language.expr.lexer import ExprError, Token, tokens, unquote

AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count"})
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_REFUSED = {
    ">": "comparisons are not part of expr: the rule's `when:` compares the result",
    "<": "comparisons are not part of expr: the rule's `when:` compares the result",
    ">=": "comparisons are not part of expr: the rule's `when:` compares the result",
    "<=": "comparisons are not part of expr: the rule's `when:` compares the result",
    "==": "comparisons are not part of expr: the rule's `when:` compares the result",
    "!=": "comparisons are not part of expr: the rule's `when:` compares the result",
    "^": "^ is not supported (operators: + - * /)",
    "%": "% is not supported (operators: + - * /)",
}
_UNSUPPORTED_WORDS = {
    "bool": "bool is not supported: the rule's `when:` compares the result",
    "group_left": "group_left is not supported (one-to-one matching only: on/ignoring)",
    "group_right": "group_right is not supported (one-to-one matching only: on/ignoring)",
    "offset": "offset is not supported",
    "and": "set operators (and, or, unless) are not supported",
    "or": "set operators (and, or, unless) are not supported",
    "unless": "set operators (and, or, unless) are not supported",
}


def parse(text: str) -> Expr:
    """The syntax tree of ``text``; ExprError (with an offset) at the first mistake."""
    parser = _Parser(text)
    tree = parser.expression(1)
    end = parser.peek()
    if end.kind != "end":
        raise parser.unexpected(end, "an operator or the end of the expression")
    return tree


def _describe(token: Token) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokens(text)
        self.i = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def take(self) -> Token:
        token = self.toks[self.i]
        if token.kind != "end":
            self.i += 1
        return token

    def unexpected(self, token: Token, wanted: str) -> ExprError:
        if token.kind == "op" and token.text in _REFUSED:
            return ExprError(token.pos, _REFUSED[token.text])
        if token.kind == "ident" and token.text in _UNSUPPORTED_WORDS:
            return ExprError(token.pos, _UNSUPPORTED_WORDS[token.text])
        return ExprError(token.pos, f"expected {wanted}, found {_describe(token)}")

    def expect(self, text: str, wanted: str) -> Token:
        token = self.take()
        if token.kind != "op" or token.text != text:
            raise self.unexpected(token, wanted)
        return token

    def is_op(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind == "op" and token.text == text

    # ------------------------------------------------------------ operators

    def expression(self, min_precedence: int) -> Expr:
        lhs = self.unary()
        while True:
            token = self.peek()
            precedence = _PRECEDENCE.get(token.text) if token.kind == "op" else None
            if precedence is None or precedence < min_precedence:
                return lhs
            self.take()
            on, ignoring, on_pos = self.modifiers()
            rhs = self.expression(precedence + 1)
            lhs = Binary(cast(BinOp, token.text), lhs, rhs, on=on, ignoring=ignoring,
                         pos=token.pos, on_pos=on_pos)

    def modifiers(self) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None,
                                 tuple[int, ...]]:
        word = self.peek()
        if word.kind == "ident" and word.text in ("on", "ignoring") and self.is_op("(", 1):
            self.take()
            labels, positions = self.label_list()
            after = self.peek()
            if after.kind == "ident" and after.text in _UNSUPPORTED_WORDS:
                raise self.unexpected(after, "an expression")
            return (labels, None, positions) if word.text == "on" else (None, labels, positions)
        if word.kind == "ident" and word.text in _UNSUPPORTED_WORDS:
            raise self.unexpected(word, "an expression")
        return None, None, ()

    def unary(self) -> Expr:
        token = self.peek()
        if token.kind == "op" and token.text in ("-", "+"):
            self.take()
            operand = self.unary()
            if token.text == "+":
                return operand
            return Binary("-", Number(0.0, token.pos), operand, pos=token.pos)
        return self.postfix(self.primary())

    def postfix(self, node: Expr) -> Expr:
        if not self.is_op("["):
            return node
        bracket = self.take()
        if not isinstance(node, Selector) or node.range is not None:
            raise ExprError(bracket.pos, "a range [5m] can only follow a selector "
                                         "(subqueries are not supported)")
        token = self.take()
        if token.kind != "duration":
            raise self.unexpected(token, "a duration such as 5m")
        try:
            seconds = parse_duration(token.text)
        except ValueError as exc:
            raise ExprError(token.pos, str(exc)) from None
        if seconds <= 0:
            raise ExprError(token.pos, "a range must be longer than 0s")
        self.expect("]", "']'")
        return Selector(node.name, node.matchers, seconds, node.pos)

    # -------------------------------------------------------------- operands

    def primary(self) -> Expr:
        token = self.peek()
        if token.kind == "number":
            self.take()
            text = token.text
            return Number(float(int(text, 16)) if text.lower().startswith("0x")
                          else float(text), token.pos)
        if token.kind == "op" and token.text == "(":
            self.take()
            inner = self.expression(1)
            self.expect(")", "')'")
            return inner
        if token.kind == "op" and token.text == "{":
            return self.selector(None, token.pos)
        if token.kind != "ident":
            raise self.unexpected(token, "a number, a metric name, a function or '('")
        if token.text in _UNSUPPORTED_WORDS:
            raise self.unexpected(token, "an expression")
        if token.text.lower() in ("inf", "nan") and not self.is_op("{", 1):
            self.take()
            return Number(math.inf if token.text.lower() == "inf" else math.nan, token.pos)
        if token.text in AGGREGATIONS and (self.is_op("(", 1) or
                                           self.peek(1).text in ("by", "without")):
            return self.aggregate()
        self.take()
        if self.is_op("("):
            return self.call(token)
        return self.selector(token.text, token.pos)

    def selector(self, name: str | None, pos: int) -> Selector:
        matchers: list[LabelMatcher] = []
        if self.is_op("{"):
            self.take()
            while not self.is_op("}"):
                matchers.append(self.matcher())
                if not self.is_op("}"):
                    self.expect(",", "',' or '}'")
            self.take()
        if name is None:
            named = [m for m in matchers if m.label == "__name__" and m.op == "="]
            if not named:
                raise ExprError(pos, 'a selector needs a metric name (name{...} or '
                                     '{__name__="name"})')
            name = named[0].value
            matchers = [m for m in matchers if m is not named[0]]
        return Selector(name, tuple(matchers), None, pos)

    def matcher(self) -> LabelMatcher:
        label = self.take()
        if label.kind != "ident" or "." in label.text:
            raise self.unexpected(label, "a label name")
        op = self.take()
        if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
            raise self.unexpected(op, "=, !=, =~ or !~")
        value = self.take()
        if value.kind != "string":
            raise self.unexpected(value, 'a quoted value ("...")')
        text = unquote(value)
        pattern = None
        if op.text in ("=~", "!~"):
            try:
                pattern = re.compile(text)
            except re.error as exc:
                raise ExprError(value.pos, f"regex {value.text} does not compile: {exc}") \
                    from None
        return LabelMatcher(label.text, cast(MatchOp, op.text), text, label.pos, pattern)

    def label_list(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        self.expect("(", "'('")
        labels: list[str] = []
        positions: list[int] = []
        while not self.is_op(")"):
            token = self.take()
            if token.kind != "ident" or "." in token.text:
                raise self.unexpected(token, "a label name")
            labels.append(token.text)
            positions.append(token.pos)
            if not self.is_op(")"):
                self.expect(",", "',' or ')'")
        self.take()
        return tuple(labels), tuple(positions)

    def grouping(self) -> tuple[tuple[str, ...], bool] | None:
        word = self.peek()
        if word.kind == "ident" and word.text in ("by", "without"):
            self.take()
            return self.label_list()[0], word.text == "without"
        return None

    def aggregate(self) -> Aggregate:
        op = self.take()
        before = self.grouping()
        self.expect("(", "'('")
        inner = self.expression(1)
        if self.is_op(","):
            raise ExprError(self.peek().pos, f"{op.text} takes one argument")
        self.expect(")", "')'")
        after = self.grouping()
        if before is not None and after is not None:
            raise ExprError(op.pos, f"{op.text} has two by/without clauses")
        labels, without = before or after or ((), False)
        return Aggregate(cast(AggOp, op.text), inner, labels, without, op.pos)

    def call(self, name: Token) -> Call:
        self.expect("(", "'('")
        args: list[Expr] = []
        positions: list[int] = []
        while not self.is_op(")"):
            positions.append(self.peek().pos)
            args.append(self.expression(1))
            if not self.is_op(")"):
                self.expect(",", "',' or ')'")
        self.take()
        return Call(name.text, tuple(args), name.pos, tuple(positions))
