"""Running one delivery of a trigger: its actions, concurrently, each at most once.

A rule naming no action gets ``ACTION_PLUGIN``. With several actions each
success is recorded in the KV bucket ``FLAREBUS_ACTIONS_DONE`` (key: the
trigger id, the action's index and plugin, hashed), so a retry, or a
redelivery after a crash, runs only what has not succeeded; with one action
the ack is its record. Failures come back as ActionErrors in the Outcome,
never raised: what to do with them (nak, dead-letter) is the worker's call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Status, StatusCode

from flarebus.actions.host import PluginHost
from flarebus.errors import ActionError, describe
from flarebus.events import ActionRef, Trigger
from flarebus.grouping import TriggerGroup
from flarebus.kv import done_key
from flarebus.telemetry import extract_context, meter, tracer

log = logging.getLogger("flarebus.worker")

_NO_SPAN = contextlib.nullcontext(INVALID_SPAN)
_run = meter.create_counter("flarebus.actions.run", description="actions started")
_failed = meter.create_counter("flarebus.actions.failed", description="action attempts failed")
_latency = meter.create_histogram("flarebus.action.latency", unit="s",
                                  description="action run time")


@dataclass
class Outcome:
    """What happened to one trigger's actions in one delivery."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[ActionError] = field(default_factory=list)


class ActionRunner:
    """Runs a trigger's actions through a PluginHost, skipping those already done."""

    def __init__(self, host: PluginHost, default_action: str) -> None:
        self.host = host
        self.default_action = default_action
        self.kv: KeyValue | None = None  # the done bucket, once the worker has set it up
        # No tracer provider installed: spans would be no-ops; skip building them per action.
        self.tracing = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    def refs(self, trigger: Trigger) -> Sequence[ActionRef]:
        return trigger.actions or [ActionRef(plugin=self.default_action)]

    async def run(self, msg: Msg, trigger: Trigger, tries: int,
                  skip: frozenset[int] = frozenset()) -> Outcome:
        """Run the actions of ``trigger`` (delivery number ``tries``); failures in the Outcome.

        ``skip``: indexes of actions not to run this time (the gate's rate limits).
        """
        refs = self.refs(trigger)
        # One action: the ack is its record. Several: each success is recorded so a
        # retry (or a redelivery after a crash) runs only what has not succeeded.
        return await self.run_all(refs, trigger, trigger.id, tries,
                                  extract_context(msg.headers), record=len(refs) > 1, skip=skip)

    async def run_group(self, group: TriggerGroup, refs: Sequence[ActionRef], record_id: str,
                        tries: int) -> Outcome:
        """Run each action once for a group notification; every success is recorded under
        ``record_id`` (the group and its notification number), because a worker taking over
        a notification whose owner died must skip what that owner finished."""
        return await self.run_all(refs, group, record_id, tries, None, record=True)

    async def run_all(self, refs: Sequence[ActionRef], work: Trigger | TriggerGroup,
                      record_id: str, tries: int, parent: Any, *, record: bool,
                      skip: frozenset[int] = frozenset()) -> Outcome:
        """Run ``refs`` on ``work`` concurrently; an action whose ``on:`` excludes the
        transition (or, for a group, all its alerts) is skipped, and so is one in ``skip``
        (rate-limited: the gate recorded it)."""
        outcome = Outcome()
        jobs: list[tuple[int, ActionRef, Trigger | TriggerGroup]] = []
        for i, ref in enumerate(refs):
            if i in skip:
                continue
            heard = _heard(ref, work)
            if heard is None:
                outcome.skipped.append(ref.plugin)
            else:
                jobs.append((i, ref, heard))
        results: list[Any]
        if len(jobs) == 1:  # the common case, without gather's tasks
            i, ref, heard = jobs[0]
            try:
                results = [await self.run_one(i, ref, heard, record_id, tries, parent, record)]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self.run_one(i, ref, heard, record_id, tries, parent, record)
                  for i, ref, heard in jobs), return_exceptions=True)
        for (_, ref, _), result in zip(jobs, results, strict=True):
            if isinstance(result, ActionError):
                outcome.failures.append(result)
            elif isinstance(result, asyncio.CancelledError):
                raise result
            elif isinstance(result, BaseException):
                outcome.failures.append(ActionError(ref.plugin, describe(result), tries))
            elif result:
                outcome.ran.append(ref.plugin)
            else:
                outcome.skipped.append(ref.plugin)
        return outcome

    async def already_done(self, key: str) -> bool:
        if self.kv is None:
            return False
        try:
            await self.kv.get(key)
        except NotFoundError:  # KeyNotFoundError and KeyDeletedError derive from it
            return False
        return True

    async def run_one(self, index: int, ref: ActionRef, work: Trigger | TriggerGroup,
                      record_id: str, tries: int, parent: Any, record: bool) -> bool:
        """Run one action unless already done; True if it ran. ActionError on failure."""
        key = done_key(record_id, index, ref.plugin) if record else ""
        if record and tries > 1 and await self.already_done(key):
            log.debug("%s: %s already done, skipped", record_id, ref.plugin)
            return False
        attributes = {"plugin": ref.plugin, "rule": work.rule}
        span_cm: Any = tracer.start_as_current_span(
            "action.execute", context=parent, attributes={
                "flarebus.plugin": ref.plugin, "flarebus.rule": work.rule,
                "flarebus.trigger_id": record_id, "flarebus.try": tries,
                "flarebus.action_index": index}) if self.tracing else _NO_SPAN
        with span_cm as span:
            _run.add(1, attributes)
            started = time.perf_counter()
            try:
                await self.host.run(ref, work)
            except ActionError as exc:
                exc.tries = tries
                self._failed(span, attributes, exc)
                raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = ActionError(ref.plugin, describe(exc), tries)
                self._failed(span, attributes, error)
                raise error from exc
            finally:
                _latency.record(time.perf_counter() - started, attributes)
        if record and self.kv is not None:
            try:
                await self.kv.put(key, b"1")
            except Exception as exc:  # the action succeeded; a missing record only risks a rerun
                log.warning("could not record %s done for %s: %s", ref.plugin, record_id, exc)
        return True

    @staticmethod
    def _failed(span: Any, attributes: dict[str, str], error: ActionError) -> None:
        _failed.add(1, attributes)
        span.set_status(Status(StatusCode.ERROR, error.error))
        span.record_exception(error)



def _heard(ref: ActionRef, work: Trigger | TriggerGroup) -> Trigger | TriggerGroup | None:
    """What of ``work`` the action hears through its ``on:`` (None: nothing, it is skipped)."""
    if not ref.on:
        return work
    if isinstance(work, Trigger):
        return work if ref.hears(work.state) else None
    return work.only(ref.on)
