"""Dead letters: a trigger no retry can help, published with why, for a person to look at.

It goes to ``triggers.dead.<rule>`` (in the triggers stream, so it is kept
and can be replayed) with the plugins, the errors and the try count in
headers, one bounded line each; the trace context travels along, and its
``Nats-Msg-Id`` is the trigger's with ``:dead``, so a worker that dies between
publishing and acking does not dead-letter it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nats.aio.msg import Msg
from nats.js import JetStreamContext

from flarebus import bus
from flarebus.errors import ActionError
from flarebus.telemetry import meter

log = logging.getLogger("flarebus.worker")

PLUGIN_HEADER = "Flarebus-Plugin"
ERROR_HEADER = "Flarebus-Error"
TRIES_HEADER = "Flarebus-Tries"
MAX_HEADER = 1000

_dead = meter.create_counter("flarebus.actions.dead_lettered",
                             description="triggers dead-lettered")


def header_text(text: str) -> str:
    """Header values are one line and bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_HEADER else flat[: MAX_HEADER - 3] + "..."


async def dead_letter(js: JetStreamContext, msg: Msg, rule: str,
                      failures: Sequence[ActionError], tries: int) -> None:
    """Publish the trigger to ``triggers.dead.<rule>`` with why (the caller acks it)."""
    msg_id = (msg.headers or {}).get(bus.MSG_ID_HEADER)
    trace: dict[str, str] = {key: msg.headers[key] for key in ("traceparent", "tracestate")
                             if msg.headers and key in msg.headers}
    await publish_dead(js, msg.data, rule, failures, tries,
                       msg_id=f"{msg_id}:dead" if msg_id else None, extra=trace)


async def publish_dead(js: JetStreamContext, data: bytes, rule: str,
                       failures: Sequence[ActionError], tries: int, *, msg_id: str | None,
                       extra: dict[str, str] | None = None) -> None:
    """Publish ``data`` (a trigger) as a dead letter of ``rule``, with why in headers."""
    plugins = ",".join(dict.fromkeys(f.plugin for f in failures))
    errors = "; ".join(f"{f.plugin}: {f.error}" for f in failures)
    headers = {
        PLUGIN_HEADER: header_text(plugins),
        ERROR_HEADER: header_text(errors),
        TRIES_HEADER: str(tries),
        bus.REASON_HEADER: header_text(f"failed after {tries} tries: {errors}"),
        **(extra or {}),
    }
    if msg_id:
        headers[bus.MSG_ID_HEADER] = msg_id
    subject = bus.dead_letter_subject(rule if rule and "." not in rule else "invalid")
    await js.publish(subject, data, headers=headers)
    _dead.add(1, {"rule": rule})
    log.error("trigger dead-lettered to %s after %d tries: %s", subject, tries, errors)
