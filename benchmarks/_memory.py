"""The ``memory`` workload, in a fresh process so that peak RSS means something.

``python -m benchmarks._memory --mode M [--url U] [--quick]`` prints three figures: the peak
RSS of a process that ran ``seq_steps``, and the RSS added by workflows suspended on a promise
(in all, and per workflow in KB).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource

import anyio

from benchmarks._modes import connector, quiet_logs
from benchmarks._workloads import (
    QUICK,
    Sizes,
    _any,
    _run,
    _wait_suspended,
    parked,
    register,
    seq_steps,
    uid,
)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _main(mode: str, url: str | None, sizes: Sizes) -> None:
    with connector(mode, url) as connect:
        async with register(connect()) as r:
            await _run(r, seq_steps, sizes.seq_steps)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"memory.peak_seq_steps {peak:.1f} MB", flush=True)
        async with register(connect()) as r:
            gc.collect()
            before = _rss_mb()
            ids = {uid("parked") for _ in range(sizes.suspended)}
            limit = anyio.Semaphore(64)

            async def start(i: str) -> None:
                async with limit:
                    await r.run(i, _any(parked))

            async with anyio.create_task_group() as tg:
                for i in ids:
                    tg.start_soon(start, i)
            await _wait_suspended(r, ids)
            gc.collect()
            added = _rss_mb() - before
            print(f"memory.suspended_{sizes.suspended} {added:.1f} MB", flush=True)
            print(f"memory.suspended_each {added * 1024 / sizes.suspended:.2f} KB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="memory")
    parser.add_argument("--url", default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quiet_logs()
    anyio.run(_main, args.mode, args.url, QUICK if args.quick else Sizes())


if __name__ == "__main__":
    main()
