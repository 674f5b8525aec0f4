"""The fixed partitions of the subject space that coordinated engines share.

A partition is a function of a sample's *subject* (``metrics.<name>``,
``stacks.<source>``), not of its labels, because that is what the NATS server
can compute: the account mapping ``metrics.>`` -> ``metrics.~.{{partition(64)}}.>``
hashes the whole subject (FNV-1a, 32 bits, modulo the count) and puts the
partition into the subject, so an engine subscribes only to the partitions it
holds and never receives, let alone decodes, the rest. ``partition_of`` is the
same hash in Python: the engines and the server must agree on it, and
tests/test_coordination.py checks that they do against a real server.

``~`` is not a valid metric-name token, so ``metrics.~.17.cpu.usage`` can never
be confused with a metric name; a plain ``metrics.cpu.usage`` publish from any
client keeps working (the server rewrites it), and an engine reading the
unmapped subjects (no mapping on the server) strips nothing.

Why 64: enough that 2..16 engines each get a near-even share (at 16, four
partitions each; an uneven split is off by one partition, 1/64 of the
subjects), few enough that an engine's subscriptions, lease keys and
heartbeats (one KV write per held partition per beat) stay cheap. The number
is part of the hash, so it is fixed: changing it moves every series.
"""

from __future__ import annotations

from collections.abc import Iterable

PARTITIONS = 64
#: The token the server's mapping puts before the partition number.
MARK = "~"


def fnv1a32(data: bytes) -> int:
    """The 32-bit FNV-1a hash nats-server's ``partition()`` transform uses."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def partition_of(prefix: str, name: str, partitions: int = PARTITIONS) -> int:
    """The partition the server maps ``<prefix>.<name>`` to."""
    return fnv1a32(f"{prefix}.{name}".encode()) % partitions


def partition_subject(prefix: str, partition: int) -> str:
    """What an engine holding ``partition`` subscribes to under ``prefix``."""
    return f"{prefix}.{MARK}.{partition}.>"


def server_mappings(prefixes: tuple[str, ...] = ("metrics", "stacks"),
                    partitions: int = PARTITIONS) -> dict[str, str]:
    """The account ``mappings`` that partition ``prefixes`` (source -> destination)."""
    return {f"{p}.>": f"{p}.{MARK}.{{{{partition({partitions})}}}}.>" for p in prefixes}


def mappings_conf(mappings: dict[str, str]) -> str:
    """``mappings`` as nats-server configuration text (the default account's block)."""
    lines = "".join(f'  "{src}": "{dst}"\n' for src, dst in mappings.items())
    return f"mappings = {{\n{lines}}}\n"


def ranges(partitions: Iterable[int]) -> str:
    """``0-31, 40, 42-43``: a partition list as a log line can carry it (64 numbers are noise)."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive partitions
    for p in sorted(set(partitions)):
        if runs and runs[-1][1] == p - 1:
            runs[-1][1] = p
        else:
            runs.append([p, p])
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs) or "none"


def strip_mark(tail: str) -> str:
    """A subject's tail after the prefix without the ``~.<partition>.`` the server added."""
    if tail[:1] != MARK:
        return tail
    return tail.split(".", 2)[-1]
