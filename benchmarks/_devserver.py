"""Servers in subprocesses on 127.0.0.1: the development server for the HTTP mode, and the
helpers some figures need (a trivial server, a counting proxy)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_PREFIX = "resonate_async dev server listening on "


@dataclass(frozen=True)
class Server:
    """A server process: its URL and its process (``/proc/<pid>/io`` tells what it sent)."""

    url: str
    proc: subprocess.Popen[str]

    def bytes_written(self) -> int:
        """Bytes the process has written so far (its answers, streams and logs), from
        ``/proc/<pid>/io``; -1 where that cannot be read."""
        try:
            with open(f"/proc/{self.proc.pid}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return -1


@contextmanager
def spawn(argv: list[str], prefix: str, *, stdin: bool = False) -> Iterator[Server]:
    """Start ``argv``, wait for its first line ``prefix + URL``; yield it; stop it after."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(prefix):
                stderr.seek(0)
                raise RuntimeError(f"{' '.join(argv)} did not start: {line!r}\n{stderr.read()}")
            yield Server(line[len(prefix):].strip(), proc)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def dev_server_process(*extra: str) -> Iterator[Server]:
    """``python -m resonate_async dev`` on a free port, with ``extra`` options."""
    with spawn([sys.executable, "-m", "resonate_async", "dev", "--host", "127.0.0.1",
                "--port", "0", *extra], _PREFIX) as server:
        yield server


@contextmanager
def dev_server() -> Iterator[str]:
    """Start ``python -m resonate_async dev`` on a free port; yield its URL; stop it after."""
    with dev_server_process() as server:
        yield server.url


@contextmanager
def raw_server() -> Iterator[str]:
    """The trivial server of ``benchmarks/_rawserver.py``; yields its URL."""
    from benchmarks._rawserver import PREFIX

    with spawn([sys.executable, "-m", "benchmarks._rawserver"], PREFIX) as server:
        yield server.url


class Proxy:
    """A counting proxy (``benchmarks/_proxy.py``) in front of ``target``'s URL."""

    def __init__(self, server: Server) -> None:
        self.url = server.url
        self._proc = server.proc

    def counts(self) -> tuple[int, int, int]:
        """``(POST requests, bytes up, bytes down)`` so far."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("\n")
        self._proc.stdin.flush()
        posts, up, down = self._proc.stdout.readline().split()
        return int(posts), int(up), int(down)


@contextmanager
def counting_proxy(target: str) -> Iterator[Proxy]:
    """A counting proxy to the server at URL ``target`` (``http://host:port``)."""
    from benchmarks._proxy import PREFIX

    address = target.split("://", 1)[-1].rstrip("/")
    with spawn([sys.executable, "-m", "benchmarks._proxy", address], PREFIX,
               stdin=True) as server:
        yield Proxy(server)
