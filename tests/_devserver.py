"""Run ``python -m resonate_async dev`` in a subprocess, for tests that need a real server.

    with dev_server(db=str(tmp_path / "r.db")) as server:
        transport = HttpTransport(server.url)
        ...
        server.kill()       # SIGKILL: a crash
        server.restart()    # same db, same port

The context manager is synchronous so that it can back a fixture of any scope.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_PREFIX = "resonate_async dev server listening on "


class DevServerProcess:
    """One development server subprocess, restartable on the same port and db."""

    def __init__(self, db: str | None = None, port: int = 0, args: Sequence[str] = ()) -> None:
        self.db = db
        self.port = port
        self.args = list(args)
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait (bounded) until it accepts connections."""
        if self.running:
            raise RuntimeError(f"the dev server on {self.url} is already running")
        cmd = [sys.executable, "-m", "resonate_async", "dev", "--host", "127.0.0.1",
               "--port", str(self.port)]
        if self.db is not None:
            cmd += ["--db", self.db]
        cmd += self.args
        if self._stderr is None:
            self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                env=env)
        self._proc = proc
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            line = None
        if line is None or not line.startswith(_PREFIX):
            self._terminate()
            raise RuntimeError(f"the dev server did not start ({cmd}): got {line!r}; "
                               f"stderr:\n{self.stderr()}")
        self.url = line[len(_PREFIX):].strip()
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill(self) -> None:
        """SIGKILL the server (a crash: no graceful shutdown)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a bound; returns the exit status."""
        return self._terminate()

    def restart(self) -> None:
        """Stop the server if it runs, then start it again with the same db on the same port."""
        if self.running:
            self._terminate()
        self.start()

    def stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read()
        self._stderr.seek(0, os.SEEK_END)
        return text

    def close(self) -> None:
        self._terminate()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _terminate(self) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Forward stdout lines (so the pipe never fills up); ``None`` at end of output."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)


@contextmanager
def dev_server(db: str | None = None, port: int = 0,
               args: Sequence[str] = ()) -> Iterator[DevServerProcess]:
    """A running dev server (in memory unless ``db``; more ``dev`` options in ``args``);
    stopped with SIGTERM on exit."""
    server = DevServerProcess(db, port, args)
    server.start()
    try:
        yield server
    finally:
        server.close()
