"""Rejected input: counted by reason, republished with the reason, logged without flooding.

Bad input never stops the engine and is never silently lost: the original
payload goes to ``flarebus.invalid`` (configurable) with header
``Flarebus-Reason: <reason>: <detail>`` and ``Flarebus-Subject: <where it came from>``,
so an operator can subscribe there and see exactly what was refused and why.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.aio.msg import Msg

from flarebus.bus import INVALID_SUBJECT, REASON_HEADER
from flarebus.engine.service.metrics import EngineStats
from flarebus.errors import describe
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.invalid")

SUBJECT_HEADER = "Flarebus-Subject"
MAX_DETAIL = 400

# The reasons a message is rejected (the first word of the Flarebus-Reason header).
MALFORMED_JSON = "malformed-json"
INVALID_SAMPLE = "invalid-sample"
SUBJECT_MISMATCH = "subject-mismatch"
EMPTY_BATCH = "empty-batch"
TOO_LARGE = "too-large"  # past engine.limits.max_message_bytes: refused unread
TOO_MANY_LABELS = "too-many-labels"  # a sample past engine.limits.max_labels
LABEL_TOO_LONG = "label-too-long"  # a label value past engine.limits.max_label_value_length

TRUNCATED_HEADER = "Flarebus-Truncated"
#: Room kept for the protocol line and header framing when fitting a republish.
_FRAMING = 256


def _header_value(text: str) -> str:
    """Header values cannot hold line breaks; keep them short, too."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DETAIL else flat[:MAX_DETAIL - 3] + "..."


def fit_payload(data: bytes, headers: dict[str, str], max_payload: int) -> bytes:
    """``data`` cut so that it and ``headers`` fit the server's ``max_payload``.

    A rejected message as large as the server allows cannot be republished with
    headers added; the start of it (enough to see what it was) goes out instead,
    with header ``Flarebus-Truncated: <original size in bytes>``.
    """
    framing = _FRAMING + sum(len(k) + len(v) + 4 for k, v in headers.items())
    if not max_payload or len(data) + framing <= max_payload:
        return data
    headers[TRUNCATED_HEADER] = str(len(data))
    return data[:max(0, max_payload - framing - 64)]


class InvalidSink:
    """Counts, republishes and (rate-limited) logs every rejected message."""

    def __init__(self, nc: Client, stats: EngineStats, *, subject: str = INVALID_SUBJECT,
                 log_interval: float = 10.0) -> None:
        self._nc = nc
        self._stats = stats
        self._subject = subject
        self._ratelog = RateLimitedLog(log, log_interval)
        self.republish_failures = 0

    async def reject(self, msg: Msg, reason: str, detail: str) -> None:
        """Count ``msg`` as rejected for ``reason`` and republish it with the reason attached."""
        self._stats.reject(reason)
        text = _header_value(f"{reason}: {detail}")
        self._ratelog.log(logging.WARNING, reason,
                          f"rejected message on {msg.subject}: {text} "
                          f"(republished to {self._subject})")
        headers = {REASON_HEADER: text, SUBJECT_HEADER: msg.subject}
        data = fit_payload(msg.data, headers, self._nc.max_payload)
        try:
            await self._nc.publish(self._subject, data, headers=headers)
        except Exception as exc:  # bus away and its buffer full: counted, never fatal
            self.republish_failures += 1
            self._ratelog.log(logging.ERROR, "republish",
                              f"could not republish a rejected message to {self._subject}: "
                              f"{describe(exc)}")
