"""Publishing triggers to JetStream: acked, retried forever, never dropped, ordered per series.

Each trigger goes to ``triggers.<rule>`` with ``Nats-Msg-Id: <trigger id>``, so
a retry of a publish that did land (ack lost), or a re-publish by a restarted
engine, is dropped by the stream's duplicate window instead of reaching a
worker twice.

Triggers are spread over ``lanes`` by series; each lane publishes one trigger
at a time and waits for its ack, so at most ``lanes`` publishes are in flight
and the firing and resolved triggers of one series reach the stream in the
order they happened. A publish that is not acknowledged (server away, no
stream, timeout) is retried with jittered backoff until it is: the evaluator keeps
running meanwhile and the backlog goes out after the reconnect.

``submitted`` / ``wait_acked(mark)`` let the checkpointer store evaluator
state only once every trigger that state implies is safely in the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from opentelemetry import context as otel_context
from opentelemetry import trace

from flarebus import telemetry
from flarebus.backoff import Backoff
from flarebus.bus import MSG_ID_HEADER, ensure_triggers_stream, trigger_subject
from flarebus.config import JetStreamSettings
from flarebus.engine.service.fit import fit_trigger
from flarebus.engine.service.inflight import InFlight
from flarebus.engine.service.metrics import EngineStats
from flarebus.errors import describe
from flarebus.events import Trigger, encoder
from flarebus.ratelog import RateLimitedLog

log = logging.getLogger("flarebus.engine.publish")


@dataclass(slots=True)
class _Pending:
    seq: int
    trigger: Trigger
    context: otel_context.Context | None


class TriggerPublisher:
    """Bounded, ordered-per-series, retry-forever JetStream publishing of triggers."""

    def __init__(self, js: JetStreamContext, stats: EngineStats, *, lanes: int = 256,
                 ack_timeout: float = 5.0, backoff_initial: float = 0.1,
                 backoff_max: float = 5.0,
                 on_acked: Callable[[Trigger], None] | None = None,
                 jetstream: JetStreamSettings | None = None,
                 inflight: InFlight | None = None,
                 max_payload: Callable[[], int] = lambda: 0,
                 gate: Callable[[Trigger], Awaitable[bool]] | None = None) -> None:
        self._js = js
        self._jetstream = jetstream  # to recreate a deleted stream with its settings
        self._max_payload = max_payload
        self._inflight = inflight or InFlight()
        #: a coordinated engine's fence: awaited before every publish attempt; False
        #: means this engine no longer holds the trigger's partition (see leases)
        self._gate = gate
        self.fenced = 0
        self._on_acked = on_acked
        self._stats = stats
        self._lanes: list[deque[_Pending]] = [deque() for _ in range(max(1, lanes))]
        self._wake = [asyncio.Event() for _ in self._lanes]
        self._ack_timeout = ack_timeout
        self._backoff = Backoff(backoff_initial, backoff_max)
        self._acked = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._ratelog = RateLimitedLog(log, 10.0)
        self.submitted = 0
        self.acked = 0

    @property
    def backlog(self) -> int:
        """Triggers submitted and not acknowledged yet."""
        return self.submitted - self.acked

    def start(self) -> None:
        """Start one long-lived task per lane (tasks per lane, never per trigger)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lane(i), name=f"trigger-lane-{i}")
                       for i in range(len(self._lanes))]

    def submit(self, trigger: Trigger, context: otel_context.Context | None = None) -> int:
        """Queue ``trigger`` for publishing (never blocks, never drops); returns its sequence."""
        self.submitted += 1
        lane = hash((trigger.rule, frozenset(trigger.labels.items()))) % len(self._lanes)
        self._lanes[lane].append(_Pending(self.submitted, trigger, context))
        self._wake[lane].set()
        return self.submitted

    async def wait_acked(self, mark: int, timeout: float | None = None) -> bool:
        """Wait until every trigger with sequence <= ``mark`` is acked; False on timeout."""
        def done() -> bool:
            return all(not lane or lane[0].seq > mark for lane in self._lanes)

        async def wait() -> None:
            async with self._acked:
                await self._acked.wait_for(done)

        if done():
            return True
        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is acknowledged."""
        return await self.wait_acked(self.submitted, timeout)

    async def close(self) -> None:
        """Stop the lanes (call ``flush`` first: what is still queued stays unpublished)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _lane(self, index: int) -> None:
        queue, wake = self._lanes[index], self._wake[index]
        while True:
            while not queue:
                wake.clear()
                await wake.wait()
            item = queue[0]
            published = await self._publish(item)
            queue.popleft()
            self.acked += 1  # done with, published or fenced
            if not published:
                self.fenced += 1  # the new holder re-derives it from the last checkpoint
            else:
                self._stats.published()
                if self._on_acked is not None:
                    self._on_acked(item.trigger)
            async with self._acked:
                self._acked.notify_all()

    async def _publish(self, item: _Pending) -> bool:
        """Publish until acknowledged: True; False when the fence forbids it (not published)."""
        trigger = item.trigger
        subject = trigger_subject(trigger.rule)
        payload = fit_trigger(trigger, encoder.encode(trigger), self._max_payload())
        attempt = 0
        with telemetry.tracer.start_as_current_span(
                f"publish {subject}", context=item.context, kind=trace.SpanKind.PRODUCER,
                attributes={"messaging.system": "nats", "messaging.destination.name": subject,
                            "flarebus.trigger.id": trigger.id,
                            "flarebus.trigger.state": trigger.state}) as span:
            headers = {MSG_ID_HEADER: trigger.id, **(telemetry.inject_headers() or {})}
            while True:
                attempt += 1
                if self._gate is not None and not await self._gate(trigger):
                    span.set_attribute("flarebus.publish.fenced", True)
                    return False
                try:
                    future = await self._js.publish_async(subject, payload, headers=dict(headers))
                    ack = await self._inflight.ack(future, self._ack_timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._stats.retried()
                    delay = self._backoff.delay(attempt)
                    self._ratelog.log(
                        logging.WARNING, "retry",
                        f"trigger {trigger.id} ({trigger.rule} {trigger.state}) not acknowledged "
                        f"({describe(exc)}); retrying in {delay:.1f}s "
                        f"(attempt {attempt}, backlog {self.backlog})")
                    if isinstance(exc, NoStreamResponseError):
                        await self._recreate_stream()
                    await asyncio.sleep(delay)
                    continue
                span.set_attribute("flarebus.publish.attempts", attempt)
                span.set_attribute("flarebus.publish.duplicate", bool(ack.duplicate))
                if attempt > 1:
                    log.info("trigger %s published after %d attempts", trigger.id, attempt)
                return True

    async def _recreate_stream(self) -> None:
        """No stream answered: it may have been deleted; put it back (harmless if it exists)."""
        try:
            await ensure_triggers_stream(self._js, self._jetstream)
        except Exception as exc:
            log.debug("could not ensure the triggers stream: %s", exc)
