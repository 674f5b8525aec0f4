"""The engine's own figures: plain counters (for logs, `status`, tests), mirrored to OTel.

Counters are bumped once per batch, not per message, so keeping them costs
nothing measurable on the ingest path. The OpenTelemetry instruments are
created on the global meter: with no exporter configured they are no-ops.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from flarebus.telemetry import meter


class EngineStats:
    """What the engine has done since it started."""

    def __init__(self) -> None:
        self.messages_received = 0
        self.samples_received = 0
        self.rejected: Counter[str] = Counter()
        #: samples by cause (slow_consumer, out_of_order, cardinality); and the number of
        #: server-side disconnects that lost input (slow_consumer_disconnects, disconnects)
        self.dropped: Counter[str] = Counter()
        self.triggers_published = 0
        self.publish_retries = 0
        self.checkpoints = 0
        self.checkpoint_keys_written = 0
        self.reloads = 0
        self.reloads_rejected = 0
        self.timer_runs = 0
        self.series_refused: dict[str, int] = {}  # by rule ("*": the global limit)
        self._series: Callable[[], int] = lambda: 0
        self._rules: Callable[[], int] = lambda: 0
        self._received = meter.create_counter(
            "flarebus.engine.samples.received", unit="{sample}",
            description="samples decoded from metrics.* and stacks.* messages")
        self._rejected = meter.create_counter(
            "flarebus.engine.messages.rejected", unit="{message}",
            description="input messages rejected (republished to flarebus.invalid), by reason")
        self._dropped = meter.create_counter(
            "flarebus.engine.samples.dropped", unit="{sample}",
            description="samples dropped: slow consumer (messages) or out of order, by cause")
        self._disconnects = meter.create_counter(
            "flarebus.engine.input.disconnects", unit="{disconnect}",
            description="disconnects of the core-NATS input (input published meanwhile is "
                        "lost), by cause: slow_consumer (the engine had stalled) or other")
        self._published = meter.create_counter(
            "flarebus.engine.triggers.published", unit="{trigger}",
            description="triggers acknowledged by JetStream")
        self._retries = meter.create_counter(
            "flarebus.engine.publish.retries", unit="{attempt}",
            description="trigger publishes retried (no ack, server away)")
        self.evaluation_latency = meter.create_histogram(
            "flarebus.engine.evaluation.duration", unit="s",
            description="time to evaluate one batch of samples or one timer run")
        meter.create_observable_gauge(
            "flarebus.engine.series", callbacks=[self._observe_series], unit="{series}",
            description="series the evaluator tracks")
        meter.create_observable_gauge(
            "flarebus.engine.rules", callbacks=[self._observe_rules], unit="{rule}",
            description="rules loaded (enabled)")

    def bind(self, series: Callable[[], int], rules: Callable[[], int]) -> None:
        """Where the gauges read the evaluator's figures from."""
        self._series, self._rules = series, rules

    def _observe_series(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._series())]

    def _observe_rules(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._rules())]

    def received(self, messages: int, samples: int) -> None:
        self.messages_received += messages
        self.samples_received += samples
        if samples:
            self._received.add(samples)

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected[reason] += count
        self._rejected.add(count, {"reason": reason})

    def drop(self, cause: str, count: int) -> None:
        if count:
            self.dropped[cause] += count
            self._dropped.add(count, {"cause": cause})

    def disconnected(self, cause: str) -> None:
        """The input subscriptions lost their connection (counted in ``dropped``, too)."""
        self.dropped["slow_consumer_disconnects" if cause == "slow_consumer"
                     else "disconnects"] += 1
        self._disconnects.add(1, {"cause": cause})

    def published(self, count: int = 1) -> None:
        self.triggers_published += count
        self._published.add(count)

    def retried(self) -> None:
        self.publish_retries += 1
        self._retries.add(1)

    def as_dict(self) -> dict[str, object]:
        return {
            "messages_received": self.messages_received,
            "samples_received": self.samples_received,
            "rejected": dict(self.rejected), "dropped": dict(self.dropped),
            "triggers_published": self.triggers_published,
            "publish_retries": self.publish_retries, "checkpoints": self.checkpoints,
            "reloads": self.reloads, "reloads_rejected": self.reloads_rejected,
            "series_refused": dict(self.series_refused),
        }
