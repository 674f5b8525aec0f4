"""The engine service: subscribe, evaluate, publish each trigger once, survive restarts.

``Engine`` wires the parts together, each in its own module:

- ``ingest``            subscriptions, batched decoding, slow-consumer accounting
- ``invalid``           rejected input: counted, republished with the reason
- ``timers``            the evaluator's next deadline as one asyncio timer
- ``trigger_publisher`` acknowledged, retried, ordered JetStream publishing
- ``checkpoint``        incremental state checkpoints in KV, and restore
- ``reload``            SIGHUP / file-change hot reload

Everything runs on one asyncio loop and the evaluator is only ever called
from it (ingest batches, timer runs, reloads), so it needs no locking.
Its lifecycle (start unless stopped, reloads, graceful stop) is in
``lifecycle``: ``flarebus engine`` and ``flarebus up`` both go through it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.errors import SlowConsumerError
from opentelemetry import context as otel_context
from opentelemetry import trace

from flarebus import bus, telemetry
from flarebus.config import Config
from flarebus.engine.service.cardinality import CardinalityReport
from flarebus.engine.service.checkpoint import META_PREFIX, Checkpointer, read_entries
from flarebus.engine.service.coordinator import Coordinator
from flarebus.engine.service.decoding import Segment
from flarebus.engine.service.handover import Partitioned, coordination, engine_id
from flarebus.engine.service.inflight import InFlight
from flarebus.engine.service.ingest import Ingest
from flarebus.engine.service.invalid import InvalidSink
from flarebus.engine.service.metrics import EngineStats
from flarebus.engine.service.reload import RuleReloader
from flarebus.engine.service.shard import Shard
from flarebus.engine.service.stall import StallWatch
from flarebus.engine.service.summary import build_summary, encode_fitting
from flarebus.engine.service.timers import DeadlineTimer
from flarebus.engine.service.trigger_publisher import TriggerPublisher
from flarebus.errors import ConfigError, Problem, describe
from flarebus.events import StackSample, Trigger, WireSample
from flarebus.summary import SUMMARY_PREFIX, EngineSummary, summary_key

log = logging.getLogger("flarebus.engine")


class Engine:
    """One rules engine (or one shard of several): start it, let it run, stop it."""

    def __init__(self, config: Config, rules_paths: Sequence[str | Path] | None = None, *,
                 clock: Callable[[], float] = time.time, reload_interval: float = 1.0,
                 shutdown_grace: float = 30.0,
                 on_acked: Callable[[Trigger], None] | None = None) -> None:
        self.config = config
        self.rules_paths = [str(p) for p in (rules_paths or config.engine.rules)]
        if not self.rules_paths:
            raise ConfigError([Problem("<settings>", 1, 1,
                                       "no rule files: give --rules PATH (or engine.rules)")])
        #: no static shard: share the partitions with the other engines (coordinator). Durable
        #: ingest reads one stream in order, so without --shard it is the one engine (0/1).
        self.coordinated = not config.engine.shard.strip() and \
            config.engine.ingest.mode != "durable"
        try:
            self.shard = Shard.parse(config.engine.shard) if config.engine.shard else Shard()
        except ValueError as exc:
            raise ConfigError([Problem("<settings>", 1, 1, f"engine.shard: {exc}")]) from None
        self.stats = EngineStats()
        self.clock = clock
        self.reload_interval = reload_interval
        self.shutdown_grace = shutdown_grace
        self.on_acked = on_acked  # called with each trigger JetStream acknowledged
        self.started_at = clock()
        self.restored_keys = 0
        self.restore_seconds = 0.0
        self.nc: Client | None = None
        self.evaluator: Any = None
        self.rules: Any = None
        self.publisher: TriggerPublisher | None = None
        self.checkpointer: Checkpointer | None = None
        self.ingest: Ingest | None = None
        self.timer: DeadlineTimer | None = None
        self.reloader: RuleReloader | None = None
        self.cardinality: CardinalityReport | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._ingest_task: asyncio.Task[None] | None = None
        self._tracing = False
        self._out_of_order_seen = 0
        self.engine_id = engine_id(socket.gethostname(), os.getpid())
        self._summary_key = summary_key(self.shard.index, self.shard.count) \
            if not self.coordinated else f"{SUMMARY_PREFIX}{self.engine_id}"
        self.coordinator: Coordinator | None = None
        self.partitioned: Partitioned | None = None
        self.recorder: Any = None  # a Publisher for recording rules' samples
        self._recording: set[asyncio.Future[None]] = set()
        self.inflight = InFlight()  # acks a disconnect loses: failed at once, sent again
        self.stall = StallWatch()
        self._position_key = f"ingest.{self.shard.index}-of-{self.shard.count}"
        self._mark: int | None = None  # the stream position the last state taken covers

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load rules, connect, restore state, subscribe: ready to evaluate when this returns."""
        from flarebus.engine.language.cardinality import SeriesGuard
        from flarebus.engine.language.evaluator import Evaluator
        from flarebus.engine.language.rulefile import load_rules

        self.rules = load_rules(self.rules_paths)  # an invalid set: InvalidFileError, no start
        self._tracing = telemetry.tracing_enabled()
        settings = self.config.engine
        self.nc = await bus.connect(self.config.nats, retry_initial=True,
                                    error_cb=self._on_nats_error,
                                    on_disconnect=self._on_disconnect)
        js = await bus.ensure_jetstream(self.nc, self.config.jetstream)
        kv = await bus.engine_state_bucket(js, self.config.jetstream)
        limits = settings.limits
        guard = SeriesGuard(limits.max_series, limits.max_series_per_rule)
        self.evaluator = Evaluator(self.rules, owns=self.shard.owns(), guard=guard)
        self.cardinality = CardinalityReport(guard, self.stats)
        self.stats.bind(series=self.evaluator.series_count,
                        rules=lambda: len(self.rules.enabled()))
        if self.coordinated:  # owns nothing until the coordinator gains partitions
            self.coordinator, self.partitioned = await coordination(self, js, kv)
            self.evaluator.set_owner(self.partitioned.owns)

        began = time.perf_counter()
        entries = await read_entries(kv) if not self.coordinated else {}
        self.evaluator.load_state(entries)
        self.evaluator.take_dirty()  # what was just loaded is already stored
        self.restored_keys = len(entries)
        self.restore_seconds = time.perf_counter() - began

        fence = self.partitioned
        self.publisher = TriggerPublisher(js, self.stats, lanes=settings.max_publish_in_flight,
                                          on_acked=self.on_acked, jetstream=self.config.jetstream,
                                          inflight=self.inflight,
                                          max_payload=lambda: self._max_payload,
                                          gate=fence.may_publish if fence else None)
        self.publisher.start()
        from flarebus.publish import Publisher

        self.recorder = Publisher(self.nc, metrics_prefix=settings.metrics_prefix)
        self.checkpointer = Checkpointer(js, kv, self._take_dirty, self.publisher,
                                         self.stats, inflight=self.inflight,
                                         may_write=fence.may_write if fence else None)
        self.timer = DeadlineTimer(self._on_deadline, clock=self.clock)
        common: dict[str, Any] = dict(
            on_metrics=self._on_metrics, on_stacks=self._on_stacks,
            metrics_prefix=settings.metrics_prefix, stacks_prefix=settings.stacks_prefix,
            pending_msgs_limit=settings.pending_msgs_limit,
            pending_bytes_limit=settings.pending_bytes_limit,
            traced=lambda: self._tracing, limits=settings.limits)
        invalid = InvalidSink(self.nc, self.stats, subject=settings.invalid_subject)
        if settings.ingest.mode == "durable":
            from flarebus.engine.service import durable
            after = await durable.read_position(kv, META_PREFIX + self._position_key,
                                                settings.ingest.stream)
            self.ingest = durable.DurableIngest(
                self.nc, js, self.stats, invalid, settings=settings.ingest, after=after,
                watch=self.stall, replication=self.config.jetstream, **common)
            await self.ingest.start()
        else:
            self.ingest = Ingest(self.nc, self.stats, invalid, **common)
            await self.ingest.start(*(([], []) if fence else (None, None)))
        self._on_deadline(self.clock())  # whatever came due while no engine ran
        self._ingest_task = asyncio.create_task(self.ingest.run(), name="engine-ingest")
        if self.coordinator is not None:
            await self.coordinator.start()  # claims a share: restores it, subscribes to it
        self.reloader = RuleReloader(self.rules_paths, load_rules, self.apply_rules,
                                     interval=self.reload_interval)
        self._tasks = [asyncio.create_task(self.reloader.run(), name="engine-reload"),
                       asyncio.create_task(self.stall.run(), name="engine-stall-watch"),
                       asyncio.create_task(self._checkpoint_loop(), name="engine-checkpoint")]
        listening = f"{settings.metrics_prefix}.> and {settings.stacks_prefix}.>" \
            if self.coordinator is None else f"{len(self.coordinator.held)} of 64 partitions"
        log.info("engine %s ready: %d rules (%d enabled) from %s; %d state keys restored in "
                 "%.2fs; listening on %s", self.name, len(self.rules.rules),
                 len(self.rules.enabled()), ", ".join(self.rules_paths), self.restored_keys,
                 self.restore_seconds, listening)

    async def stop(self) -> None:
        """Graceful stop: no more input, evaluate what arrived, flush publishes, checkpoint."""
        if self.coordinator is not None:
            await self.coordinator.stop()  # hands every partition over (checkpointed) at once
        if self.ingest is not None:
            await self.ingest.stop()
        if self._ingest_task is not None:
            await self._ingest_task
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.timer is not None:
            self.timer.stop()
        if self.publisher is not None:
            if not await self.publisher.flush(self.shutdown_grace):
                log.error("shutdown: %d triggers could not be published within %.0fs; a "
                          "restarted engine re-evaluates them from the last checkpoint",
                          self.publisher.backlog, self.shutdown_grace)
            if self.checkpointer is not None:
                written = await self.checkpointer.checkpoint(publish_timeout=0)
                await self._save_position()
                await self.write_summary()
                log.info("final checkpoint: %d keys written", written)
            await self.publisher.close()
        if self.recorder is not None:
            await asyncio.gather(*self._recording, return_exceptions=True)
            await self.recorder.close()
        if self.nc is not None:
            await bus.close(self.nc)
        log.info("engine %s stopped: %s", self.name, self.stats.as_dict())

    @property
    def name(self) -> str:
        """``i/N`` for a static shard, the engine id for a coordinated engine."""
        return self.engine_id if self.coordinated else str(self.shard)

    def request_reload(self) -> None:
        """Reload the rule files now (what SIGHUP does)."""
        if self.reloader is not None:
            self.reloader.request()

    # ------------------------------------------------------------- evaluation

    def _on_metrics(self, segments: list[Segment[WireSample]]) -> None:
        self._evaluate(segments, self.evaluator.ingest)

    def _on_stacks(self, segments: list[Segment[StackSample]]) -> None:
        self._evaluate(segments, self.evaluator.ingest_stacks)

    def _evaluate(self, segments: Iterable[Segment[Any]],
                  ingest: Callable[..., list[Trigger]]) -> None:
        began = time.perf_counter()
        now = self.clock()
        for segment in segments:
            start_ns = time.time_ns()
            triggers = ingest(segment.samples, now=now)
            if triggers:
                parent = telemetry.extract_context(segment.headers) if segment.headers else None
                self._emit(triggers, "samples", parent, start_ns)
        self.stats.evaluation_latency.record(time.perf_counter() - began, {"cause": "samples"})
        if self.cardinality is not None:
            self.cardinality.check()
        self._reschedule()

    def on_deadline_now(self) -> None:
        """Run what is due now (after a restore: deadlines that passed while nobody held them)."""
        self._on_deadline(self.clock())

    def _on_deadline(self, now: float) -> None:
        assert self.timer is not None and self.ingest is not None
        if self.ingest.behind():  # durable: the backlog runs these deadlines in event time
            self.timer.schedule(now + 0.2)
            return
        began = time.perf_counter()
        start_ns = time.time_ns()
        triggers = self.evaluator.advance(now)
        self.stats.timer_runs += 1
        if triggers:
            self._emit(triggers, "timer", None, start_ns)
        self.stats.evaluation_latency.record(time.perf_counter() - began, {"cause": "timer"})
        self._reschedule()

    def _publish_recorded(self) -> None:
        """Recording rules' samples go out on ``metrics.<record>``, batched like any sample."""
        samples = self.evaluator.take_recorded()
        if samples and self.recorder is not None:
            future = asyncio.ensure_future(self.recorder.send_many(samples))
            self._recording.add(future)
            future.add_done_callback(self._recording.discard)

    def _reschedule(self) -> None:
        """Set the timer to the evaluator's next deadline if that is earlier than the timer's.

        Asked after every batch, so it must be O(1) when nothing earlier appeared: passing
        the timer's instant lets the evaluator answer from its heap's top instead of
        re-queueing the staleness deadlines that every sample moved later.
        """
        self._publish_recorded()
        timer = self.timer
        assert timer is not None
        at = timer.scheduled_at
        timer.schedule(self.evaluator.next_deadline(math.inf if at is None else at))

    def apply_rules(self, rules: Any) -> None:
        """Hot reload: swap in a valid rule set (unchanged rules keep their state)."""
        start_ns = time.time_ns()
        triggers = self.evaluator.replace_rules(rules, now=self.clock())
        self.rules = rules
        if self.partitioned is not None:
            self.partitioned.learn(rules)
        self.stats.reloads += 1
        if triggers:
            self._emit(triggers, "reload", None, start_ns)
        self._reschedule()
        log.info("rules reloaded: %d rules (%d enabled); %d triggers from removed or changed "
                 "rules", len(rules.rules), len(rules.enabled()), len(triggers))

    def _emit(self, triggers: list[Trigger], cause: str, parent: otel_context.Context | None,
              start_ns: int) -> None:
        """Hand triggers to the publisher; with tracing, under an evaluation span."""
        context: otel_context.Context | None = None
        if self._tracing:
            span = telemetry.tracer.start_span(
                "evaluate", context=parent, start_time=start_ns,
                attributes={"flarebus.cause": cause, "flarebus.triggers": len(triggers),
                            "flarebus.rules": sorted({t.rule for t in triggers})})
            span.end()
            context = trace.set_span_in_context(span)
        for trigger in triggers:
            log.info("trigger %s %s %s (value %s, id %s)", trigger.rule, trigger.state,
                     trigger.labels or "{}", trigger.value, trigger.id)
            assert self.publisher is not None  # triggers come only from a started engine
            self.publisher.submit(trigger, context)

    # ------------------------------------------------------------- background

    async def _checkpoint_loop(self) -> None:
        interval = self.config.engine.checkpoint_interval
        while True:
            await asyncio.sleep(interval)
            try:
                self._count_out_of_order()
                assert self.checkpointer is not None  # the loop runs only once started
                await self.checkpointer.checkpoint()
                await self._save_position()
                await self.write_summary()
            except asyncio.CancelledError:
                raise
            except Exception:  # the bus may be away: the next round retries
                log.exception("checkpoint failed; retrying in %.1fs", interval)

    def _take_dirty(self) -> dict[str, bytes | None]:
        """The evaluator's changed state, and (durable) the stream position it covers."""
        self._mark = self.ingest.applied if self.ingest is not None else None
        return self.evaluator.take_dirty()  # type: ignore[no-any-return]

    async def _save_position(self) -> None:
        """Durable: after a complete checkpoint, where a restart resumes (durable.py)."""
        if self._mark is None or self.checkpointer is None or self.checkpointer.unsaved:
            return
        from flarebus.engine.service.durable import Position, position_encoder
        await self.checkpointer.put_meta(self._position_key, position_encoder.encode(
            Position(self.config.engine.ingest.stream, self._mark)))

    def _count_out_of_order(self) -> None:
        seen = self.evaluator.dropped_out_of_order
        self.stats.drop("out_of_order", seen - self._out_of_order_seen)
        self._out_of_order_seen = seen

    def summary(self) -> EngineSummary:
        """What ``flarebus status`` shows for this engine."""
        if self.reloader is not None:
            self.stats.reloads_rejected = self.reloader.rejected
        return build_summary(self.evaluator, self.rules, shard=self.name,
                             started_at=self.started_at, now=self.clock(),
                             rule_files=list(self.rules_paths), stats=self.stats.as_dict())

    async def write_summary(self) -> None:
        if self.checkpointer is not None and self.evaluator is not None:
            await self.checkpointer.put_meta(
                self._summary_key, encode_fitting(self.summary(), self._max_payload))

    @property
    def _max_payload(self) -> int:
        """The connected server's max_payload (what one message may be), 1 MiB by default."""
        return (self.nc.max_payload if self.nc is not None else 0) or 1 << 20

    async def _on_disconnect(self) -> None:
        """Acks due on the lost connection fail now (and are sent again); input loss is told."""
        self.inflight.lose_all()
        if self.ingest is not None:
            self.ingest.on_disconnect(self.stall.recent())

    async def _on_nats_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            if self.ingest is not None:
                self.ingest.on_slow_consumer(exc.sub)
            return
        log.warning("NATS: %s", describe(exc))

