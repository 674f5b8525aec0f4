"""Partition leases in a KV bucket with a TTL, and the fence they give an engine.

Keys of ``FLAREBUS_ENGINE_LEASES`` (``flarebus.bus.engine_leases_bucket``):

- ``e.<engine id>``  EngineInfo, rewritten every beat: the registry of live engines
- ``p.<partition>``  Lease: who holds the partition, rewritten every beat

The bucket's TTL is the lease: the server removes a key nobody rewrote within
it, on the server's own clock. A lease is taken with ``create`` (only if the
key does not exist) and kept with ``update`` on the revision last written
(compare-and-set), so two engines can never both believe a write made them
the holder: the loser's write fails.

The fence (why no two engines publish for one partition at once): engine A
treats partition P as publishable only until ``sent + FENCE_SHARE * ttl``, where
``sent`` is the monotonic instant A *sent* its last successful write of
``p.P``. The server stored that write after ``sent``, so the key lives until at
least ``sent + ttl`` on the server's clock, and B can create it only after that
(or after A deleted it, which A does only after revoking P from its own fence).
(A third way, for restarts: an engine whose registry entry names a process on
the same machine and pid namespace that no longer exists is certainly dead, and
a dead process publishes nothing more (what it wrote to its socket before it
died carries deterministic ids): its leases may be deleted at once, by CAS on
the revisions read; see ``known_dead``.)
So A's last publish for P is handed to the connection at least
``(1 - FENCE_SHARE) * ttl`` (1.5 s at the default 6 s) before B can hold P. It
assumes clocks tick at about the same rate and that a publish handed to a
connected client reaches the server within that margin; what could still slip
through (a publish buffered in the client while it reconnects) carries the
trigger's deterministic id, which the stream's duplicate window drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

ENGINE_KEY = "e."
PARTITION_KEY = "p."
#: The share of the TTL a lease write keeps a partition publishable for (see above).
FENCE_SHARE = 0.75
#: Beats per TTL: a lease survives ``BEATS - 1`` lost writes in a row.
BEATS = 4


class Lease(msgspec.Struct):
    """The value of ``p.<partition>``: the holder and the revision it was taken at (its epoch)."""

    engine: str
    epoch: int = 0


class EngineInfo(msgspec.Struct, omit_defaults=True):
    """The value of ``e.<engine id>``: what ``flarebus status`` shows of a live engine."""

    id: str
    host: str
    pid: int
    started_at: float
    updated_at: float
    partitions: list[int] = []
    series: int = 0
    pending: int = 0
    firing: int = 0
    samples_received: int = 0
    triggers_published: int = 0
    #: "partitioned": reads only its partitions' subjects; "all": the server does not map
    subjects: str = "partitioned"
    #: which kernel and pid namespace ``pid`` is in (``process_space``): an engine in the
    #: same one can tell for sure that this process is gone
    space: str = ""


lease_encoder = msgspec.json.Encoder()
lease_decoder = msgspec.json.Decoder(Lease)
info_decoder = msgspec.json.Decoder(EngineInfo)


def process_space() -> str:
    """This machine's boot and this process's pid namespace: where a pid means one process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""  # not Linux: no engine is ever known dead, its leases just expire
    return f"{boot}:{namespace}"


def known_dead(info: EngineInfo, space: str) -> bool:
    """True only when ``info``'s process is certainly gone: same boot and pid namespace as
    ours, and no process has its pid (a reused pid or a zombie counts as alive: wait)."""
    if not space or info.space != space or info.pid == os.getpid():
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # a process of another user has that pid
    return False


def partition_key(partition: int) -> str:
    return f"{PARTITION_KEY}{partition}"


class Fence:
    """The partitions this engine may publish and checkpoint for, each valid until an instant."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[int, float] = {}
        self._changed = asyncio.Event()

    @property
    def held(self) -> set[int]:
        return set(self._until)

    def holds(self, partition: int) -> bool:
        return partition in self._until

    def valid(self, partition: int) -> bool:
        until = self._until.get(partition)
        return until is not None and self._clock() < until

    def grant(self, partition: int, until: float) -> None:
        self._until[partition] = until
        self._wake()

    def revoke(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._until.pop(partition, None)
        self._wake()

    async def wait(self, partition: int, poll: float = 0.05) -> bool:
        """True once ``partition`` is publishable; False as soon as it is not held."""
        while not self.valid(partition):
            if partition not in self._until:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), poll)
        return True

    def _wake(self) -> None:
        self._changed.set()
