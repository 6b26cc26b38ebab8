"""A client process: starts one fan-out on the workers of a group and waits for its result.

``python -m tests.multiprocess.client_app URL GROUP ID COUNT SECONDS [FUNCTION]``: a
``Resonate(url=..., worker=False)`` sends ``FUNCTION(COUNT, SECONDS)`` (default ``fanout``) as
execution ID to the group, prints ``result=<value>`` when it completes, then
``children=<states>``: the state of every child (``ID:1`` .. ``ID:COUNT``) as the server holds
it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog

from resonate_async import Resonate

WAIT = 45.0


async def main(url: str, group: str, wid: str, count: int, seconds: float,
               function: str = "fanout") -> None:
    resonate = Resonate(url=url, group=group, worker=False)
    async with resonate:
        handle = await resonate.rpc(wid, function, count, seconds)
        print(f"started {wid}", flush=True)
        result = await handle.result(timeout=WAIT)
        print(f"result={result}", flush=True)
        states = [(await resonate.promises.get(f"{wid}:{n}")).state
                  for n in range(1, count + 1)]
        print(f"children={','.join(states)}", flush=True)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
                     float(sys.argv[5]), *sys.argv[6:7]))
