"""``python -m resonate_async dev``: the listening line, signals, errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from resonate_async.__main__ import main
from tests._devserver import DevServerProcess, dev_server


def test_dev_prints_the_real_url_and_serves_health() -> None:
    with dev_server() as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.port != 0
        assert httpx.get(server.url + "/health", timeout=5).status_code == 200
        assert httpx.get(server.url + "/ready", timeout=5).status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_dev_stops_cleanly_on_a_signal_even_with_an_open_stream(sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "resonate_async", "dev", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("resonate_async dev server listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as stream:
            stream.sendall(b"GET /poll/g/p HTTP/1.1\r\nHost: x\r\n\r\n")
            assert stream.recv(100).startswith(b"HTTP/1.1 200")
            proc.send_signal(sig)
            assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def test_dev_reports_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "resonate_async", "dev", "--port", str(port)],
            capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr
    assert "--port" in done.stderr


def test_dev_reports_a_db_held_by_another_server(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    with dev_server(db=db):
        done = subprocess.run(
            [sys.executable, "-m", "resonate_async", "dev", "--port", "0", "--db", db],
            capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 1
    assert "in use" in done.stderr


def test_a_restart_keeps_the_state_of_the_db(tmp_path: Path) -> None:
    body = (b'{"kind":"promise.create","head":{"corrId":"c","version":"2026-04-01"},'
            b'"data":{"id":"kept","timeoutAt":4102444800000}}')
    get = body.replace(b"promise.create", b"promise.get").replace(
        b',"timeoutAt":4102444800000', b"")
    server = DevServerProcess(db=str(tmp_path / "r.db"))
    server.start()
    try:
        port = server.port
        assert httpx.post(server.url + "/", content=body, timeout=5).status_code == 200
        server.restart()
        assert server.port == port
        assert httpx.post(server.url + "/", content=get, timeout=5).status_code == 200
    finally:
        server.close()


def test_the_cli_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "dev" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
