"""Reading a JetStream KV bucket whole: every live key under a prefix, in one pass.

Shared by the engine's restore (its series state) and by the readers of the
engines' summaries (``flarebus status``, the web console), which must not
import the engine's service to read them; and the key under which a worker
records a finished action (``done_key``), which the console reads too.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nats-py is imported by what reads, not by who needs a key's name
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

STATE_PREFIX = "state."
META_PREFIX = "meta."
KV_OPERATION = "KV-Operation"
#: JetStream's "wrong last sequence" error codes (JSStreamWrongLastSequence*): a
#: compare-and-set lost. nats-py raises KeyWrongLastSequenceError for update(), but
#: delete(last=...) reports it as a plain APIError carrying one of these.
WRONG_REVISION = frozenset({10071, 10164})


def lost_race(exc: BaseException) -> bool:
    """``exc`` says another writer changed the key first (any KV write with ``last``)."""
    return getattr(exc, "err_code", None) in WRONG_REVISION


def is_removal(msg: Msg) -> bool:
    """A KV stream message that deletes or purges its key."""
    return bool(msg.headers and msg.headers.get(KV_OPERATION) in ("DEL", "PURGE"))


async def read_entries(kv: KeyValue, prefix: str = STATE_PREFIX,
                       timeout: float = 60.0, within: str = "") -> dict[str, bytes]:
    """Every live key under ``prefix`` (prefix removed) with its value: the restore input.

    ``within`` narrows the read to the keys under ``prefix + within`` (a rule's
    states, ``"<rule>."``: how a partition's states are loaded), still keyed
    without ``prefix`` alone.

    Reads the bucket's stream with one ordered push consumer (last value per
    subject), which is far cheaper for 100k keys than a get per key.
    """
    from nats.js.api import DeliverPolicy

    js: JetStreamContext = kv._js
    entries: dict[str, bytes] = {}
    subject_prefix = f"$KV.{kv._name}."
    cut = len(subject_prefix) + len(prefix)
    done = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        key = msg.subject[cut:]
        if is_removal(msg):
            entries.pop(key, None)
        else:
            entries[key] = msg.data
        if msg.metadata.num_pending == 0:
            done.set()

    sub = await js.subscribe(f"{subject_prefix}{prefix}{within}>", cb=on_msg,
                             ordered_consumer=True,
                             deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                             pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        info = await sub.consumer_info()
        if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
            done.set()  # nothing stored: no message will ever say "last one"
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await sub.unsubscribe()
    return entries


def done_key(trigger_id: str, index: int, plugin: str) -> str:
    """The KV key recording that action ``index`` (``plugin``) of a trigger succeeded.

    Hashed: trigger ids and plugin names may hold characters KV keys may not.
    """
    raw = f"{trigger_id}\x00{index}\x00{plugin}".encode()
    return hashlib.blake2b(raw, digest_size=20).hexdigest()
