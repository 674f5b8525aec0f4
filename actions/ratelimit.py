"""Action rate limits: a token bucket per (rule, action plugin), per worker.

A bucket of ``N/PERIOD`` holds up to N tokens and gains N every PERIOD; each
run of the action takes one. A trigger arriving at an empty bucket does not
run that action (it is dropped, not delayed: a delayed notification of a
flapping series is stale by the time it goes, and delaying would hold the
message past ``ack_wait``). Drops are counted per (rule, action) and recorded
on ``triggers.suppressed.<rule>`` (actions/gate.py).

Each worker has its own buckets: with W workers sharing the consumer, a rule
runs an action at most W times the limit (JetStream spreads triggers across
workers, so in practice close to the limit once the load is spread). A shared
limit would need a round trip to a KV counter per trigger.
"""

from __future__ import annotations

import time
from collections import Counter

from flarebus.events import ActionRef
from flarebus.gate_config import ParsedRate, RateLimits


class TokenBucket:
    """``rate.runs`` tokens, refilled continuously at ``runs / period`` a second."""

    __slots__ = ("capacity", "per_second", "tokens", "updated")

    def __init__(self, rate: ParsedRate, now: float) -> None:
        self.capacity = float(rate.runs)
        self.per_second = rate.runs / rate.period
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimiter:
    """Answers "may this rule's action run now?" and counts the answers that were no."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self.buckets: dict[tuple[str, str, str], TokenBucket | None] = {}
        #: (rule, plugin) -> triggers whose action was not run
        self.dropped: Counter[tuple[str, str]] = Counter()

    def allow(self, rule: str, ref: ActionRef, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        key = (rule, ref.plugin, ref.rate_limit or "")
        if key not in self.buckets:
            rate = self.limits.rate_for(rule, ref.plugin, ref.rate_limit)
            self.buckets[key] = None if rate is None else TokenBucket(rate, now)
        bucket = self.buckets[key]
        if bucket is None or bucket.take(now):
            return True
        self.dropped[rule, ref.plugin] += 1
        return False
