"""OpenTelemetry plumbing shared by every role: providers, exporters, header propagation.

Traces follow a sample from its publisher to the action it caused: the W3C
trace context travels in NATS headers (``traceparent``/``tracestate``).
Exporters: none by default; ``console``; or ``otlp`` when the optional
``flarebus[otlp]`` extra is installed. The standard ``OTEL_*`` variables apply
(``OTEL_TRACES_EXPORTER``, ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``).

Nothing of OpenTelemetry is imported until it is used: the API with the first
``tracer``/``meter`` or traced message, the SDK in ``setup()``. A command that
traces nothing (``flarebus publish``, ``check``) starts without it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context

log = logging.getLogger("flarebus.telemetry")

_configured = False


def __getattr__(name: str) -> Any:
    """``tracer`` and ``meter``, made on first use (PEP 562).

    The OpenTelemetry API costs about 40 ms to import; `flarebus publish` and an
    application's Publisher must not pay that unless something traces.
    """
    if name == "tracer":
        from opentelemetry import trace
        value: Any = trace.get_tracer("flarebus")
    elif name == "meter":
        from opentelemetry import metrics
        value = metrics.get_meter("flarebus")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # made once
    return value


def tracing_enabled() -> bool:
    """True when a real (SDK) tracer provider is installed; spans are no-ops otherwise,
    so a hot path can skip building them."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    return isinstance(trace.get_tracer_provider(), TracerProvider)


def inject_headers() -> dict[str, str] | None:
    """The current trace context as NATS headers, or None when nothing is being traced.

    Called per published message, so the common case costs a dictionary lookup:
    while nobody has imported the OpenTelemetry trace API, no span can be current.
    Otherwise an empty context (nothing traced) costs one context-variable lookup.
    """
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    from opentelemetry import context as otel_context

    if not otel_context.get_current():
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


def extract_context(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context a message carried, to parent the spans it causes."""
    if not headers or "traceparent" not in headers:
        return None
    from opentelemetry.propagate import extract

    return extract(dict(headers))


def setup(exporter: str = "none", *, service_name: str = "flarebus",
          endpoint: str | None = None) -> None:
    """Install tracer and meter providers once per process, with the chosen exporter.

    ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_SERVICE_NAME``
    override the arguments, as the OpenTelemetry specification says they should.
    """
    global _configured
    if _configured:
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter = os.environ.get("OTEL_TRACES_EXPORTER", exporter) or "none"
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint or "") or None
    service_name = os.environ.get("OTEL_SERVICE_NAME", service_name)
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    readers = []
    if exporter == "console":
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), 60_000))
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.error("telemetry exporter 'otlp' needs the otlp extra: "
                      "pip install 'flarebus[otlp]'; exporting nothing")
        else:
            base = (endpoint or "http://127.0.0.1:4318").rstrip("/")
            tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces")))
            readers.append(PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=f"{base}/v1/metrics")))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    _configured = True
