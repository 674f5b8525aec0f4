"""The engine summary: its Structs are shared contracts in ``flarebus.summary`` (the web
console and ``flarebus status`` read them); what is the engine's own is writing one that
always fits the server's max_payload (``encode_fitting``).
"""

from flarebus.summary import (
    MAX_LISTED_SERIES,
    SUMMARY_PREFIX,
    EngineSummary,
    RuleInfo,
    SeriesInfo,
    summary_decoder,
    summary_encoder,
    summary_key,
)

__all__ = ["MAX_LISTED_SERIES", "SUMMARY_PREFIX", "EngineSummary", "RuleInfo", "SeriesInfo",
           "encode_fitting", "summary_decoder", "summary_encoder", "summary_key"]

#: Room kept under the server's max_payload for the KV subject and protocol framing.
_FRAMING = 1024


def encode_fitting(summary: EngineSummary, max_payload: int) -> bytes:
    """The summary encoded within ``max_payload``: fewer listed series (``truncated``) if need be.

    Whatever the input (thousands of long labels on the firing series), the
    status write must fit, or ``flarebus status`` goes stale while the engine runs.
    The listed series are halved until it fits, then the rule list is cut.
    """
    budget = max(_FRAMING, max_payload - _FRAMING)
    data = summary_encoder.encode(summary)
    while len(data) > budget and summary.states:
        summary.states = summary.states[:len(summary.states) // 2]
        summary.truncated = True
        data = summary_encoder.encode(summary)
    while len(data) > budget and summary.rules:
        summary.rules = summary.rules[:len(summary.rules) // 2]
        summary.truncated = True
        data = summary_encoder.encode(summary)
    return data
