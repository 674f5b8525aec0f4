"""The engine summary's Structs, now shared contracts in ``flarebus.summary``.

Kept so ``flarebus.engine.service.summary`` goes on working for its importers;
the engine builds the summary in ``engine.py``.
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
           "summary_decoder", "summary_encoder", "summary_key"]
