"""OpenTelemetry spans per execution and per executed step, seen by the SDK's memory exporter."""

from __future__ import annotations

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from resonate_async import Context, Never, Resonate

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)


@pytest.fixture
def spans() -> list[ReadableSpan]:
    _EXPORTER.clear()
    return []


def _finished(prefix: str) -> list[ReadableSpan]:
    return [s for s in _EXPORTER.get_finished_spans() if s.name.startswith(prefix)]


async def test_each_claim_and_each_executed_step_is_a_span(spans: list[ReadableSpan]) -> None:
    resonate = Resonate()
    gate = anyio.Event()

    @resonate.register
    def charge(amount: int) -> int:
        return amount

    @resonate.register
    async def wait(ctx: Context) -> None:
        await gate.wait()

    @resonate.register
    async def order(ctx: Context, amount: int) -> int:
        paid = await ctx.run(charge, amount)
        await ctx.rpc(wait)
        return paid

    async with resonate:
        handle = await resonate.run("traced-1", order, 5)
        await anyio.sleep(0.05)
        gate.set()
        with anyio.fail_after(10):
            assert await handle == 5

    executions = [s for s in _finished("resonate.execute order")
                  if s.attributes and s.attributes["resonate.promise_id"] == "traced-1"]
    assert [s.attributes["resonate.outcome"] for s in executions if s.attributes] == [
        "suspended", "completed"]
    assert [s.attributes["resonate.attempt"] for s in executions if s.attributes] == [1, 2]
    steps = [s for s in _finished("resonate.step charge")
             if s.attributes and s.attributes["resonate.promise_id"] == "traced-1:1"]
    assert len(steps) == 1  # the replay answered charge from the cache: no second span
    assert steps[0].parent is not None
    assert steps[0].parent.span_id == executions[0].context.span_id


async def test_a_failing_step_records_its_error(spans: list[ReadableSpan]) -> None:
    resonate = Resonate()

    @resonate.register
    def explode() -> None:
        raise ValueError("kaboom")

    @resonate.register
    async def flow(ctx: Context) -> str:
        try:
            await ctx.run(explode).options(retry=Never())
        except ValueError:
            return "handled"
        return "no error"

    async with resonate:
        with anyio.fail_after(10):
            assert await (await resonate.run("traced-2", flow)) == "handled"
    step = [s for s in _finished("resonate.step explode")
            if s.attributes and s.attributes["resonate.promise_id"] == "traced-2:1"]
    assert len(step) == 1
    assert step[0].status.status_code == StatusCode.ERROR
    assert any(e.name == "exception" for e in step[0].events)
    execution = [s for s in _finished("resonate.execute flow")
                 if s.attributes and s.attributes["resonate.promise_id"] == "traced-2"]
    assert execution[0].attributes is not None
    assert execution[0].attributes["resonate.outcome"] == "completed"
