"""The HTTP-only workloads: client cost per round trip, the concurrency curve, full preloads.

Each returns no figure outside the HTTP mode (``connect().url`` is ``None`` there). None of
them asserts on speed. CPU figures use ``time.process_time`` of this process only: every
server runs in its own process.
"""

from __future__ import annotations

import inspect
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio

from benchmarks._devserver import counting_proxy, dev_server_process, raw_server
from benchmarks._workloads import (
    Connect,
    Figure,
    Sizes,
    _run,
    _timed,
    one_step,
    register,
    seq_steps,
)
from resonate_async import Resonate
from resonate_async.protocol import PromiseGet
from resonate_async.transport import HttpTransport


def _group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def http_transport(url: str, in_flight: int | None = None) -> HttpTransport:
    """An ``HttpTransport`` to ``url`` allowing ``in_flight`` requests at once, where the
    transport has that knob (``max_in_flight``); its default otherwise."""
    if in_flight is not None and "max_in_flight" in inspect.signature(HttpTransport).parameters:
        return HttpTransport(url, max_in_flight=in_flight)
    return HttpTransport(url)


async def client_cpu_per_round_trip(url: str, n: int, reps: int) -> float:
    """Client CPU (µs, this process only) per ``promise.get`` round trip to ``url``."""
    samples = []
    async with http_transport(url) as transport:
        for _ in range(min(n, 50)):  # connect and warm up
            await transport.send(PromiseGet("bench-rtt-missing"))
        for _ in range(reps):
            start = time.process_time()
            for _ in range(n):
                await transport.send(PromiseGet("bench-rtt-missing"))
            samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


async def bench_rtt(connect: Connect, sizes: Sizes) -> list[Figure]:
    """``rtt.dev`` / ``rtt.raw``: client CPU per ``POST /`` round trip against the dev server
    and against a trivial server that answers with canned bytes (the client's own cost)."""
    url = connect().url
    if url is None:
        return []
    dev = await client_cpu_per_round_trip(url, sizes.rtt, sizes.reps)
    with raw_server() as raw_url:
        raw = await client_cpu_per_round_trip(raw_url, sizes.rtt, sizes.reps)
    return [Figure("rtt.dev", dev, "us/req", False), Figure("rtt.raw", raw, "us/req", False)]


async def bench_roots_inflight(connect: Connect, sizes: Sizes) -> list[Figure]:
    """``roots_inflight.K``: roots/s over HTTP with at most K roots (and K requests) in flight."""
    url = connect().url
    if url is None:
        return []
    n = sizes.inflight_roots
    out = []
    for k in sizes.inflight:
        async with register(Resonate(transport=http_transport(url, k), group=_group())) as r:
            t = await _timed(lambda r=r, k=k: _wave(r, n, k), sizes.reps)  # type: ignore[misc]
        out.append(Figure(f"roots_inflight.{k}", n / t, "roots/s", True))
    return out


async def _wave(r: Resonate, n: int, k: int) -> None:
    """``n`` roots of ``one_step``, at most ``k`` at a time."""
    limit = anyio.Semaphore(k)

    async def one() -> None:
        async with limit:
            await _run(r, one_step)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)


async def requests_per_root(url: str, n: int) -> Figure:
    """``roots.requests``: ``POST /`` requests per root (one root = one ``run`` to its result),
    counted by a proxy in front of the server at ``url``, over ``n`` roots."""
    with counting_proxy(url) as proxy:
        async with register(Resonate(url=proxy.url, group=_group())) as r:
            await _run(r, one_step)  # connect and subscribe outside the count
            before = proxy.counts()[0]
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(_run, r, one_step)
            posts = proxy.counts()[0] - before
    return Figure("roots.requests", posts / n, "req/root", False)


async def bench_seq_steps_full(connect: Connect, sizes: Sizes) -> list[Figure]:
    """``seq_steps_full.N``: sequential steps against ``dev --no-extensions`` (every
    ``task.fence`` answer carries the whole branch preload, like the Resonate server): µs per
    step and bytes the server sent per step, at each N; ``.cost_growth`` and ``.bytes_growth``
    are the per-step figures at the largest N over the smallest (1 when linear in steps)."""
    if connect().url is None:
        return []
    out: list[Figure] = []
    per_step: list[float] = []
    per_byte: list[float] = []
    with dev_server_process("--no-extensions", "--log-level", "warning") as server:
        async with register(Resonate(url=server.url, group=_group())) as r:
            await _run(r, seq_steps, 2)  # connect and subscribe outside the count
            for n in sizes.full_steps:
                sent = server.bytes_written()
                start = time.perf_counter()
                await _run(r, seq_steps, n)
                elapsed = time.perf_counter() - start
                sent = server.bytes_written() - sent
                per_step.append(elapsed / n * 1e6)
                out.append(Figure(f"seq_steps_full.{n}", per_step[-1], "us/step", False))
                if server.bytes_written() >= 0:  # /proc/<pid>/io is readable here
                    per_byte.append(sent / n)
                    out.append(Figure(f"seq_steps_full.{n}.bytes", per_byte[-1], "B/step",
                                      False))
    out.append(Figure("seq_steps_full.cost_growth", per_step[-1] / per_step[0], "x", False))
    if per_byte:
        out.append(Figure("seq_steps_full.bytes_growth", per_byte[-1] / per_byte[0], "x",
                          False))
    return out


HTTP_WORKLOADS: dict[str, Callable[[Connect, Sizes], Awaitable[list[Figure]]]] = {
    "rtt": bench_rtt,
    "roots_inflight": bench_roots_inflight,
    "seq_steps_full": bench_seq_steps_full,
}
