"""One worker process of the ``scaling`` workload: ``python -m benchmarks._pg_worker URL``.

A ``Resonate(url=URL)`` worker of the default group with the workloads' functions; prints
``ready`` once it serves, and stops on SIGTERM (as any worker does).
"""

from __future__ import annotations

import sys

import anyio

from benchmarks._modes import quiet_logs
from benchmarks._workloads import register
from resonate_async import Resonate


async def main(url: str) -> None:
    async with register(Resonate(url=url)) as resonate:
        print("ready", flush=True)
        await resonate.serve()


if __name__ == "__main__":
    quiet_logs()
    anyio.run(main, sys.argv[1])
