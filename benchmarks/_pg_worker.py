"""One worker process of the ``scaling`` workload: ``python -m benchmarks._pg_worker URL``.

A ``Resonate(url=URL)`` worker of the default group with the workloads' functions; prints
``ready`` once it serves, and stops on SIGTERM (as any worker does), printing then
``counters {...}`` (its round trips, statements and serialization conflicts, as JSON).
"""

from __future__ import annotations

import json
import sys

import anyio

from benchmarks._modes import quiet_logs
from benchmarks._workloads import register
from resonate_async import Resonate
from resonate_async.transport import PostgresTransport


async def main(url: str) -> None:
    async with register(Resonate(url=url)) as resonate:
        print("ready", flush=True)
        try:
            await resonate.serve()
        finally:  # what its connections did, for the scaling report
            transport = resonate.transport
            if isinstance(transport, PostgresTransport):
                print(f"counters {json.dumps(transport.counters())}", flush=True)


if __name__ == "__main__":
    quiet_logs()
    anyio.run(main, sys.argv[1])
