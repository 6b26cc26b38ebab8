"""Each benchmark runs once, tiny, in each mode: they cannot rot. No figure is checked."""

from __future__ import annotations

import re
import sys

import anyio
import pytest

from benchmarks._modes import POSTGRES_ENV
from benchmarks._runner import HTTP_ONLY, NAMES, POSTGRES_ONLY, _peer_process, main, run_peers
from benchmarks._targets import TARGETS
from benchmarks._workloads import QUICK
from tests._postgres import PostgresServer

# ``name@mode value unit``, then optionally ``  xR vs peer, ...``
FIGURE = re.compile(r"^(\S+)@(\S+) (-?[0-9.e+-]+|nan|inf) (\S+)(  x\S+ vs \S+(, x\S+ vs \S+)*)?$")


def _figures(lines: list[str]) -> dict[str, float]:
    out = {}
    for line in lines:
        if line.startswith("#"):
            continue
        match = FIGURE.match(line)
        assert match, f"not a figure line: {line!r}"
        out[f"{match.group(1)}@{match.group(2)}"] = float(match.group(3))
    return out


@pytest.mark.slow  # every benchmark, on real servers for http
@pytest.mark.parametrize("mode", ["memory", "sqlite", "http"])
def test_every_benchmark_runs_and_prints_its_figures(
        mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--quick", "--no-peers", f"--mode={mode}"])
    lines = capsys.readouterr().out.splitlines()
    figures = _figures(lines)
    for name in NAMES:
        if (name in HTTP_ONLY and mode != "http") or name in POSTGRES_ONLY:
            continue
        assert any(f.startswith(name) and f.endswith(f"@{mode}") for f in figures), (name, lines)
    # the figures the targets name are printed in the mode they name ...
    for target in TARGETS:
        if target.figure.endswith(f"@{mode}"):
            assert target.figure in figures, (target.figure, lines)
    if mode == "http":
        for k in QUICK.inflight:
            assert f"roots_inflight.{k}@http" in figures, lines
        for n in QUICK.full_steps:
            assert figures[f"seq_steps_full.{n}.bytes@http"] > 0, lines
        assert figures["roots.requests@http"] >= 1, lines  # counted through the proxy
    # ... and the run ends with the targets table, one row per target and the curve
    rows = [line for line in lines if line.startswith("# |")]
    assert len(rows) == 2 + len(TARGETS) + 1, lines


@pytest.mark.slow  # every benchmark once on PostgreSQL, worker processes included
def test_every_benchmark_runs_on_postgres_with_the_worker_process_curve(
        pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(POSTGRES_ENV, pg_server.dsn)  # the session's server, not one more
    main(["--quick", "--no-peers", "--mode=postgres"])
    lines = capsys.readouterr().out.splitlines()
    figures = _figures(lines)
    for name in NAMES:
        if name in HTTP_ONLY:
            continue
        assert any(f.startswith(name) and f.endswith("@postgres") for f in figures), (name, lines)
    for k in QUICK.scaling_workers:  # one point per worker count, with where the CPU went
        assert figures[f"scaling.{k}@postgres"] > 0, lines
        assert any(line.startswith(f"# scaling.{k}: cores busy") for line in lines), lines
    rows = [line for line in lines if line.startswith("# |")]
    assert any("seq_steps@postgres" in row and "steps/s" in row for row in rows), rows


def test_the_scaling_workload_refuses_a_mode_without_postgres() -> None:
    from benchmarks._scaling import bench_scaling
    from resonate_async import Resonate

    with pytest.raises(ValueError, match="postgres mode only"):
        anyio.run(bench_scaling, lambda: Resonate(), QUICK)


def test_peer_output_is_parsed_into_figures() -> None:
    from benchmarks._runner import _parse

    assert _parse("seq_steps 12.5 steps/s dbos.sqlite\nnoise\n") == [
        ("seq_steps", 12.5, "steps/s", "dbos.sqlite")]


def test_a_peer_that_cannot_run_is_left_out_with_a_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    found = run_peers({"dbos": "/nonexistent/python"}, ["seq_steps"], QUICK, True, None)
    assert found == {}
    # a peer that starts but fails (say, its package is broken) is reported with its error
    figures = _peer_process("dbos", [sys.executable, "-c",
                                     "print('seq_steps 5 steps/s dbos.sqlite'); "
                                     "raise SystemExit('no database')"])
    out = capsys.readouterr().out
    assert "# peer dbos failed to run" in out and "left out" in out, out
    assert "# peer dbos exited 1" in out and "no database" in out, out
    assert figures == [("seq_steps", 5.0, "steps/s", "dbos.sqlite")]  # what it printed counts


def test_the_trivial_server_answers_what_the_http_transport_accepts() -> None:
    from benchmarks._devserver import raw_server
    from benchmarks._http_workloads import client_cpu_per_round_trip

    with raw_server() as url:
        cpu = anyio.run(client_cpu_per_round_trip, url, 5, 1)
    assert cpu > 0


def test_the_counting_proxy_counts_each_post_and_the_bytes_each_way() -> None:
    from benchmarks._devserver import counting_proxy, raw_server
    from benchmarks._http_workloads import client_cpu_per_round_trip

    with raw_server() as url, counting_proxy(url) as proxy:
        assert proxy.counts() == (0, 0, 0)
        # 5 warm-up requests and 5 timed, one POST each
        anyio.run(client_cpu_per_round_trip, proxy.url, 5, 1)
        posts, up, down = proxy.counts()
    assert posts == 10
    assert up > 10 * len("POST / HTTP/1.1") and down > 10 * len("HTTP/1.1 404 Not Found")
