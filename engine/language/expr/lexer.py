"""Tokens of an expression, each with its offset, so every error can point at a column.

Metric names are flarebus names: dot-separated tokens (``http.requests.rate``),
so ``.`` is part of an identifier here, unlike in PromQL. A ``-`` is always the
minus operator: select a metric whose name holds a dash with
``{__name__="my-metric"}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flarebus.errors import FlarebusError

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<duration>(?<=\[)\s*[0-9][0-9a-z]*\s*(?=\]))
  | (?P<number>(?:0[xX][0-9a-fA-F]+)|(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/(){}\[\],=<>^%])
""", re.VERBOSE)


class ExprError(FlarebusError):
    """A mistake in an expression, at ``pos`` (an offset into its text)."""

    def __init__(self, pos: int, message: str) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, duration, ident, string, op, end
    text: str
    pos: int


def tokens(text: str) -> list[Token]:
    """Every token of ``text`` and a final ``end``; ExprError at the first character that fits
    none."""
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(pos, f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind != "ws":
            value = m.group()
            if kind == "number" and m.end() < len(text) and text[m.end()].isalpha() \
                    and not value.lower().startswith("0x"):
                raise ExprError(pos, f"{value}{text[m.end()]}...: a duration is only "
                                     "allowed in a range [5m]")
            out.append(Token(kind, value.strip(), pos))
        pos = m.end()
    out.append(Token("end", "", len(text)))
    return out


def unquote(token: Token) -> str:
    """The value of a string token (Go-style escapes, as PromQL)."""
    def escape(m: re.Match[str]) -> str:
        char = m.group(1)
        if char not in _ESCAPES:
            raise ExprError(token.pos + m.start() + 1, f"unknown escape \\{char} in a string")
        return _ESCAPES[char]
    return re.sub(r"\\(.)", escape, token.text[1:-1])


_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
