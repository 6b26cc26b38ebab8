"""Optional OpenTelemetry spans: one per execution run and one per local step.

Active only when ``opentelemetry-api`` is installed (``pip install "resonate-async[otel]"``)
and the application has set a tracer provider; otherwise every helper here is a no-op that
costs a function call.

* ``resonate.execute {function}`` — a worker driving a claimed task until it completes,
  suspends, is released or is lost; attributes ``resonate.promise_id``, ``resonate.task_id``,
  ``resonate.attempt`` (the task version), ``resonate.function`` and ``resonate.outcome``.
* ``resonate.step {function}`` — a local step actually executed (a step answered from the
  replay cache makes no span); attributes ``resonate.promise_id`` and ``resonate.function``;
  a failure is recorded on the span (status ERROR, with the exception).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, Final, Protocol

try:  # an optional dependency: spans only when the API is installed
    from opentelemetry import trace as _trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # pragma: no cover - exercised by installations without the extra
    _trace = None  # type: ignore[assignment]

ENABLED: Final = _trace is not None
_SCOPE: Final = "resonate_async"


_MISSING: Final = object()
# The API loads a provider named by this variable when none was set in code (read once: an
# application names it before it starts).
_PROVIDER_FROM_ENV: Final = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_on = False  # a real provider was seen; the API lets a provider be set only once


def _active() -> bool:
    """Whether spans go anywhere: the API is installed and an application set a provider
    (the API's default provider drops everything, so building spans for it is waste).

    Called for every step, so the common answers are cheap: a provider, once set, never
    changes, and none set in code or the environment means none (``get_tracer_provider``
    reads the environment on each call, a tenth of an embedded step).
    """
    global _on
    if _on:
        return True
    if _trace is None:
        return False
    if getattr(_trace, "_TRACER_PROVIDER", _MISSING) is None and not _PROVIDER_FROM_ENV:
        return False
    provider = _trace.get_tracer_provider()
    _on = not isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)
    return _on


class SpanLike(Protocol):
    """What the SDK does with a span (a no-op object when tracing is off)."""

    def set_attribute(self, key: str, value: Any) -> None: ...


class _NoSpan:
    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass


_NO_SPAN: Final = _NoSpan()


@contextmanager
def _span(name: str, attributes: dict[str, Any]) -> Iterator[SpanLike]:
    assert _trace is not None
    tracer = _trace.get_tracer(_SCOPE)
    with tracer.start_as_current_span(name, attributes=attributes,
                                      record_exception=False) as span:
        try:
            yield span
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise


def execution_span(function: str, task_id: str, attempt: int) -> Any:
    """A context manager around one claim of a task (yields a span to annotate)."""
    if not _active():
        return nullcontext(_NO_SPAN)
    return _span(f"resonate.execute {function}", {
        "resonate.promise_id": task_id, "resonate.task_id": task_id,
        "resonate.attempt": attempt, "resonate.function": function,
    })


def step_span(function: str, promise_id: str) -> Any:
    """A context manager around one executed local step (yields a span to annotate)."""
    if not _active():
        return nullcontext(_NO_SPAN)
    return _span(f"resonate.step {function}", {
        "resonate.promise_id": promise_id, "resonate.function": function,
    })
