"""A counting TCP proxy, to count what a client sends and receives whatever its HTTP library.

``python -m benchmarks._proxy HOST:PORT`` listens on a free port of 127.0.0.1, prints
``proxy listening on http://127.0.0.1:PORT`` and forwards every connection to ``HOST:PORT``.
Each line read on stdin is answered on stdout with ``posts bytes_up bytes_down``: the ``POST``
requests seen so far and the bytes each way. Used only for counting runs (it adds a hop, so
nothing timed goes through it).
"""

from __future__ import annotations

import asyncio
import sys

PREFIX = "proxy listening on "
_POST = b"POST / HTTP/1."


class _Counts:
    posts = 0
    up = 0
    down = 0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
    tail = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            if up:
                _Counts.up += len(chunk)
                seen = tail + chunk
                _Counts.posts += seen.count(_POST)  # the tail is too short to hold one
                tail = seen[-(len(_POST) - 1):]
            else:
                _Counts.down += len(chunk)
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _main(host: str, port: int) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer, True), _pump(up_reader, writer, False))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"{PREFIX}http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    async with server:
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(f"{_Counts.posts} {_Counts.up} {_Counts.down}", flush=True)


if __name__ == "__main__":
    target_host, _, target_port = sys.argv[1].rpartition(":")
    asyncio.run(_main(target_host, int(target_port)))
