"""Run workflows of the official Resonate Python SDK against ``python -m resonate_async dev``.

``python interop/official_sdk_workflow.py URL`` in an environment with ``resonate-sdk`` (the
official SDK, Python >= 3.12; ``nox -s interop`` builds one and starts the server). Scenarios:

1. ``workflow``: a local step (``ctx.run``), a call to another registered function through the
   server (``ctx.rpc``) and a durable sleep (``ctx.sleep``, a timer tagged with a target);
2. ``overlapping``: two workflows at once whose local steps outlive a heartbeat interval, so
   the SDK renews leases of two origins in one ``task.heartbeat`` (the dev server accepts it);
   every step must run exactly once;
3. ``approval``: a human-in-the-loop promise (``ctx.promise``, tagged ``resonate:external``)
   settled from outside with ``resonate.promises.resolve``;
4. ``mixed``: an official-SDK workflow calls ``cube`` with ``ctx.rpc`` on a resonate_async
   worker (interop/resonate_async_worker.py, started here in a subprocess): both SDKs share
   the id scheme, the tags and the encoding of arguments and results.

Prints one ``PASS``/``FAIL`` line per scenario, naming the server (``official SDK on dev``)
and the duration, and exits 0, or 1 naming what went wrong.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.resonate import Resonate
from resonate.types import Value

SLEEP = timedelta(seconds=1.5)
TTL = timedelta(seconds=2)  # heartbeats every second
STEP_SECONDS = 2.5  # longer than the ttl: only heartbeats keep the lease
DEADLINE = 60.0
OURS = "async-workers"  # the group of the resonate_async worker ("resonate-*" is reserved)
LABEL = "[official SDK on dev]"  # which SDK ran against which server


class Failed(Exception):
    """A scenario finished with a wrong outcome."""


def build(url: str) -> tuple[Resonate, dict[str, Any], collections.Counter[str]]:
    resonate = Resonate(url=url, group="interop", ttl=TTL)
    runs: collections.Counter[str] = collections.Counter()

    async def double(ctx: Any, n: int) -> int:
        return n * 2

    async def slow_step(ctx: Any, key: str) -> str:
        runs[key] += 1
        await asyncio.sleep(STEP_SECONDS)
        return key.upper()

    @resonate.register
    async def square(ctx: Any, n: int) -> int:
        return n * n

    @resonate.register
    async def workflow(ctx: Any, n: int) -> dict[str, int]:
        doubled = await ctx.run(double, n)
        squared = await ctx.rpc("square", doubled)
        await ctx.sleep(SLEEP)
        return {"doubled": doubled, "squared": squared}

    @resonate.register
    async def overlapping(ctx: Any, key: str) -> str:
        return str(await ctx.run(slow_step, key))

    @resonate.register
    async def approval(ctx: Any) -> Any:
        return await ctx.promise(timeout=timedelta(seconds=DEADLINE))

    @resonate.register
    async def mixed(ctx: Any, n: int) -> int:
        return int(await ctx.options(target=OURS).rpc("cube", n)) + 1

    return resonate, {"workflow": workflow, "overlapping": overlapping,
                      "approval": approval, "mixed": mixed}, runs


async def scenario_workflow(resonate: Resonate, fns: dict[str, Any], uid: str) -> str:
    handle = resonate.run(f"workflow-{uid}", fns["workflow"], 3)
    result = await asyncio.wait_for(handle.result(), DEADLINE)
    if result != {"doubled": 6, "squared": 36}:
        raise Failed(f"wrong result {result!r}")
    return "local step, rpc and sleep"


async def scenario_overlapping(resonate: Resonate, fns: dict[str, Any], uid: str,
                               runs: collections.Counter[str]) -> str:
    keys = [f"a-{uid}", f"b-{uid}"]
    handles = [resonate.run(f"overlap-{key}", fns["overlapping"], key) for key in keys]
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), DEADLINE)
    if results != [key.upper() for key in keys]:
        raise Failed(f"wrong results {results!r}")
    again = {key: runs[key] for key in keys if runs[key] != 1}
    if again:
        raise Failed(f"steps ran more than once (leases lapsed?): {again}")
    return "two origins' leases renewed together, each step ran once"


async def scenario_approval(resonate: Resonate, fns: dict[str, Any], uid: str) -> str:
    wid = f"approval-{uid}"
    handle = resonate.run(wid, fns["approval"])
    deadline = time.monotonic() + DEADLINE
    while True:  # the workflow creates wid:1 when it starts
        try:
            record = await resonate.promises.get(f"{wid}:1")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
    if record.tags.get("resonate:external") != "true":
        raise Failed(f"the promise is not tagged external: {record.tags}")
    await resonate.promises.resolve(f"{wid}:1", Value(data={"approved": True}))
    result = await asyncio.wait_for(handle.result(), DEADLINE)
    if result != {"approved": True}:
        raise Failed(f"wrong result {result!r}")
    return "settled from outside"


async def scenario_mixed(resonate: Resonate, fns: dict[str, Any], uid: str, url: str) -> str:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("resonate_async_worker.py")), url, OURS,
        stdout=asyncio.subprocess.PIPE)
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), DEADLINE)
        if line.strip() != b"ready":
            raise Failed(f"the resonate_async worker did not start (exit {worker.returncode})")
        result = await asyncio.wait_for(resonate.run(f"mixed-{uid}", fns["mixed"], 3).result(),
                                        DEADLINE)
    finally:
        if worker.returncode is None:
            worker.terminate()
        try:
            code = await asyncio.wait_for(worker.wait(), 10)
        except TimeoutError:
            worker.kill()
            code = await worker.wait()
    if result != 28:
        raise Failed(f"wrong result {result!r}")
    if code != 0:
        raise Failed(f"the resonate_async worker exited with {code} on SIGTERM")
    return "an official-SDK workflow called a resonate_async worker"


async def main(url: str) -> int:
    resonate, fns, runs = build(url)
    uid = uuid.uuid4().hex[:12]
    scenarios: dict[str, Callable[[], Awaitable[str]]] = {
        "workflow": lambda: scenario_workflow(resonate, fns, uid),
        "overlapping": lambda: scenario_overlapping(resonate, fns, uid, runs),
        "approval": lambda: scenario_approval(resonate, fns, uid),
        "mixed": lambda: scenario_mixed(resonate, fns, uid, url),
    }
    failed = 0
    try:
        for name, scenario in scenarios.items():
            began = time.monotonic()
            try:
                what = await scenario()
            except Exception as exc:
                failed += 1
                print(f"FAIL {LABEL} {name}: {type(exc).__name__}: {exc}", flush=True)
                continue
            elapsed = time.monotonic() - began
            if name == "workflow" and elapsed < SLEEP.total_seconds():
                failed += 1
                print(f"FAIL {LABEL} {name}: the sleep of {SLEEP} did not wait ({elapsed:.2f}s)")
                continue
            print(f"PASS {LABEL} {name}: {what} ({elapsed:.2f}s)", flush=True)
    finally:
        await resonate.stop()
    print(f"     {LABEL} {len(scenarios) - failed} of {len(scenarios)} checks passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: official_sdk_workflow.py URL", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1])))
