"""OpenTelemetry tracing: one trace per call, carried between the services in gRPC metadata.

The media gateway starts a call's trace when it answers and passes its context (W3C
``traceparent``) in the metadata of the call's ``StreamAudio`` and ``StreamCall`` streams; the
speech gateway and the runtime record the call's stages as spans of that trace, and the runtime
passes it on to the integration gateway. The stages of a turn: end of speech (VAD), final
transcript, FSM decision, backend call, TTS first audio, first RTP packet out.

Where spans go (``ServiceSettings``): ``otlp_endpoint`` (an OpenTelemetry collector, gRPC), or
``trace_file`` (JSON lines, one span per line: what ``voicetyped up`` and the benchmarks read),
or nowhere (tracing off: the API's no-op tracer, no cost).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

Context = otel_context.Context
_provider: TracerProvider | None = None


class JsonLinesExporter(SpanExporter):
    """Spans as compact JSON lines in a file (appended; safe for one process)."""

    def __init__(self, path: Path, service: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._service = service
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            if ctx is None:
                continue
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "service": self._service,
                        "name": span.name,
                        "trace_id": f"{ctx.trace_id:032x}",
                        "span_id": f"{ctx.span_id:016x}",
                        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
                        "start_ns": span.start_time,
                        "end_ns": span.end_time,
                        "attributes": dict(span.attributes or {}),
                    },
                    separators=(",", ":"),
                )
            )
        with self._lock:
            self._file.write("".join(line + "\n" for line in lines))
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            self._file.close()


def configure(service: str, trace_file: Path | None, otlp_endpoint: str) -> None:
    """Install the process's tracer provider (nothing when both destinations are unset)."""
    global _provider
    if trace_file is None and not otlp_endpoint:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"voicetyped-{service}"}))
    exporter: SpanExporter
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)
    else:
        assert trace_file is not None
        exporter = JsonLinesExporter(trace_file, service)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    _provider = provider


def shutdown() -> None:
    """Export what is pending (at process exit)."""
    if _provider is not None:
        _provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def metadata(ctx: Context | None) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying ``ctx`` (W3C trace context)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return tuple(carrier.items())


def from_metadata(pairs: Iterable[tuple[str, Any]] | None) -> Context:
    """The trace context a peer sent in gRPC metadata (an empty context when none)."""
    carrier: Mapping[str, str] = {str(k): str(v) for k, v in (pairs or ())}
    return propagate.extract(carrier)


def wall_ns() -> int:
    return time.time_ns()


def record(
    tracer_: trace.Tracer,
    name: str,
    ctx: Context | None,
    start_ns: int,
    end_ns: int | None = None,
    **attributes: Any,
) -> None:
    """A finished span of a stage that already happened (``end_ns``: now)."""
    span = tracer_.start_span(
        name,
        context=ctx,
        start_time=start_ns,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )
    span.end(end_time=end_ns if end_ns is not None else time.time_ns())
