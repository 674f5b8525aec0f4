"""Triggers that fit the server's max_payload whatever the input.

A trigger over ``max_payload`` can never be published: retried forever, it
would hold back every checkpoint behind it (state is stored only once its
triggers are acknowledged). Its size comes from the rule's templated
annotations (a format width is not capped) and from the series' labels
(bounded at ingest by ``engine.limits``), so the annotations are cut first,
then label values; the trigger says so in annotation ``flarebus_truncated``
(its original size). Its id, rule, state and times are never touched: it
stays the same trigger for deduplication and for the worker.
"""

from __future__ import annotations

import msgspec

from flarebus.events import Trigger, encoder

TRUNCATED_ANNOTATION = "flarebus_truncated"
#: Room kept for the subject, the headers (msg id, trace context) and framing.
FRAMING = 2048
#: What is kept of each cut value.
KEEP = 256
MARK = "...[truncated]"


def _cut(values: dict[str, str], keep: int) -> dict[str, str]:
    return {k: v if len(v) <= keep else v[:keep] + MARK for k, v in values.items()}


def fit_trigger(trigger: Trigger, payload: bytes, max_payload: int) -> bytes:
    """``payload`` (``trigger`` encoded) if it fits ``max_payload``, else a cut trigger's."""
    budget = max_payload - FRAMING
    if not max_payload or len(payload) <= budget:
        return payload
    size = str(len(payload))
    keep = KEEP
    annotations = _cut(trigger.annotations, keep)
    cut = msgspec.structs.replace(trigger, annotations={**annotations,
                                                        TRUNCATED_ANNOTATION: size})
    data = encoder.encode(cut)
    while len(data) > budget and keep > 0:
        keep //= 4
        cut = msgspec.structs.replace(
            cut, labels=_cut(trigger.labels, keep),
            annotations={**_cut(trigger.annotations, keep), TRUNCATED_ANNOTATION: size})
        data = encoder.encode(cut)
    return data
