"""The development server in a subprocess on 127.0.0.1, for the HTTP mode."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_PREFIX = "resonate_async dev server listening on "


@contextmanager
def dev_server() -> Iterator[str]:
    """Start ``python -m resonate_async dev`` on a free port; yield its URL; stop it after."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "resonate_async", "dev", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(_PREFIX):
                stderr.seek(0)
                raise RuntimeError(f"the dev server did not start: {line!r}\n{stderr.read()}")
            yield line[len(_PREFIX):].strip()
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
