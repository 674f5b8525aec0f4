"""Which part of the series one engine owns: ``--shard i/N`` (``engine.shard``).

Its own module, importing nothing heavy, because ``flarebus engine --shard``
checks the value while parsing the command line (a bad one is a usage error
before anything starts) and the engine checks the config file's and the
environment's value with the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SHARD_HINT = "is not a shard (use i/N with 0 <= i < N, e.g. 0/2)"


@dataclass(frozen=True, slots=True)
class Shard:
    """This engine's part of the series: ``index`` of ``count``."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"1/4"`` -> Shard(1, 4); ValueError with the hint users see otherwise."""
        index, sep, count = text.strip().partition("/")
        try:
            shard = cls(int(index), int(count))
        except ValueError:
            shard = None
        if not sep or shard is None or shard.count < 1 or not 0 <= shard.index < shard.count:
            raise ValueError(f"{text!r} {SHARD_HINT}")
        return shard

    def owns(self) -> Callable[[str], bool] | None:
        """The evaluator's ``owns`` predicate; None when this engine owns everything."""
        if self.count == 1:
            return None
        from flarebus.events import shard_of  # the wire contracts: only once an engine runs

        index, count = self.index, self.count
        return lambda key: shard_of(key, count) == index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
