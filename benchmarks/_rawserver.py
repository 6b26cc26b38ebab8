"""A trivial HTTP/1.1 server for measuring a client's own cost per ``POST /`` round trip.

``python -m benchmarks._rawserver`` listens on a free port of 127.0.0.1, prints
``raw server listening on http://127.0.0.1:PORT`` and answers every request on a keep-alive
connection with a canned ``promise.get`` "not found" envelope carrying the request's corrId
(so a client that checks it accepts the answer). No engine, no framework: what a client spends
per round trip against it is the client's own cost.
"""

from __future__ import annotations

import asyncio
import re

PREFIX = "raw server listening on "
_CORR = re.compile(rb'"corrId"\s*:\s*"([^"]*)"')
_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def answer(body: bytes) -> bytes:
    """The whole HTTP response to one request ``body``."""
    found = _CORR.search(body)
    corr = found.group(1) if found else b"0"
    payload = (b'{"kind":"promise.get","head":{"corrId":"' + corr +
               b'","status":404,"version":"2026-04-01"},"data":"Promise not found"}')
    return (b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: " +
            str(len(payload)).encode() + b"\r\n\r\n" + payload)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            found = _LENGTH.search(head)
            body = await reader.readexactly(int(found.group(1))) if found else b""
            writer.write(answer(body))
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _main() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"{PREFIX}http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main())
