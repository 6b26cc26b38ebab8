"""The benchmark runner: peers first (in their own environments), then each mode's workloads.

Every figure is printed as ``name@mode value unit``, followed by how many times better it is
than each peer's figure of the same name measured in this run (``x12.3 vs dbos.sqlite``). The
run ends with the table of issue 13's targets (``# |`` lines): each met, or by how much not.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import anyio

from benchmarks._devserver import counting_proxy, dev_server, raw_server
from benchmarks._http_workloads import HTTP_WORKLOADS
from benchmarks._modes import MODES, POSTGRES_ENV, connector, postgres, quiet_logs
from benchmarks._scaling import bench_scaling
from benchmarks._targets import curve, summary
from benchmarks._workloads import QUICK, WORKLOADS, Figure, Sizes

POSTGRES_WORKLOADS = {"scaling": bench_scaling}
ALL_WORKLOADS = {**WORKLOADS, **HTTP_WORKLOADS, **POSTGRES_WORKLOADS}
NAMES = (*ALL_WORKLOADS, "memory")
# the workloads that measure nothing outside the HTTP mode, and outside the postgres mode
HTTP_ONLY = frozenset(HTTP_WORKLOADS)
POSTGRES_ONLY = frozenset(POSTGRES_WORKLOADS)
PEERS_DIR = Path(__file__).parent / "peers"
# peer name -> (script, environment variable naming its interpreter)
PEERS = {
    "resonate-sdk": ("resonate_sdk.py", "BENCH_PEER_RESONATE_SDK"),
    "dbos": ("dbos_bench.py", "BENCH_PEER_DBOS"),
}
PEER_TIMEOUT = 900.0


def _parse(lines: str) -> list[tuple[str, float, str, str]]:
    out = []
    for line in lines.splitlines():
        parts = line.split()
        if len(parts) == 4:
            try:
                out.append((parts[0], float(parts[1]), parts[2], parts[3]))
            except ValueError:
                continue
    return out


def _peer_process(peer: str, cmd: list[str]) -> list[tuple[str, float, str, str]] | None:
    """Run one peer command; its figures (those printed before a failure or a timeout count),
    or None (said on stdout) when it could not start."""
    shown = " ".join(cmd[2:])
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=PEERS_DIR,
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            print(f"# peer {peer} failed to run ({shown}): {exc}; left out", flush=True)
            return None
        try:
            returncode = proc.wait(PEER_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
        out.seek(0)
        err.seek(0)
        text = out.read()
        figures = _parse(text)
        for line in text.splitlines():
            if line.startswith("# "):  # the peer's own notes (fewer repetitions ...)
                print(f"# peer {peer}: {line[2:]}", flush=True)
        if returncode is None:
            print(f"# peer {peer} did not finish within {PEER_TIMEOUT:g} s ({shown}): stopped; "
                  "the figures it printed before count", flush=True)
        elif returncode != 0:
            lines = err.read().strip().splitlines()[-3:]
            print(f"# peer {peer} exited {returncode} ({shown}): {' | '.join(lines)}",
                  flush=True)
    return figures


def run_peers(pythons: dict[str, str], names: list[str], sizes: Sizes, quick: bool,
              url: str | None, postgres_url: str | None = None) -> dict[str, dict[str, float]]:
    """Run each peer's script in its interpreter; ``{figure name: {peer tag: value}}``.

    With ``postgres_url`` (the postgres mode's server) DBOS also runs with its system
    database on that server (``dbos.postgres``), next to its SQLite run.

    Over HTTP the official SDK also measures its client's CPU per round trip (``rtt``, against
    the dev server and a trivial server) and, through a counting proxy, its ``POST /``
    requests per root (``roots.requests``: the count with N roots minus the count with none).
    """
    found: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        raw_url = (stack.enter_context(raw_server())
                   if url is not None and "rtt" in names else None)
        for peer, python in pythons.items():
            script = str(PEERS_DIR / PEERS[peer][0])
            _print_version(peer, python)
            size_args = [f"--steps={sizes.seq_steps}", f"--fanout={sizes.fanout}",
                         f"--roots={sizes.roots}", f"--rpc={sizes.seq_rpc[0]}",
                         f"--reps={sizes.reps}", f"--rtt={sizes.rtt}"]
            runs: list[list[str]] = [[]] if peer != "resonate-sdk" else [["--mode=local"]]
            if peer == "dbos" and postgres_url is not None:
                runs.append([f"--postgres={postgres_url}"])
            if peer == "resonate-sdk" and url is not None:
                runs.append(["--mode=http", f"--url={url}",
                             *([f"--raw-url={raw_url}"] if raw_url else [])])
            for extra in runs:
                cmd = [python, script, *extra, *size_args, *(["--quick"] if quick else []),
                       *names]
                figures = _peer_process(peer, cmd)
                for name, value, unit, tag in figures or []:
                    print(f"{name}@{tag} {value:.6g} {unit}", flush=True)
                    found.setdefault(name, {})[tag] = value
            if peer == "resonate-sdk" and url is not None and "roots" in names:
                counted = _count_peer_requests(python, script, url, sizes.counted_roots)
                if counted is not None:
                    print(f"roots.requests@resonate-sdk.http {counted:.6g} req/root", flush=True)
                    found.setdefault("roots.requests", {})["resonate-sdk.http"] = counted
    return found


def _print_version(peer: str, python: str) -> None:
    """``# peer NAME VERSION on Python X.Y.Z`` (nothing if the interpreter cannot say)."""
    code = ("import importlib.metadata as m, platform; "
            f"print(m.version({peer!r}), platform.python_version())")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return
    if proc.returncode == 0 and len(proc.stdout.split()) == 2:
        version, py = proc.stdout.split()
        print(f"# peer {peer} {version} on Python {py}", flush=True)


def _count_peer_requests(python: str, script: str, url: str, n: int) -> float | None:
    """The official SDK's ``POST /`` requests per root, through a counting proxy."""
    posts = []
    with counting_proxy(url) as proxy:
        for roots in (0, n):
            before = proxy.counts()[0]
            cmd = [python, script, "--mode=http", f"--url={proxy.url}", f"--roots={roots}",
                   "--reps=1", "roots"]
            if _peer_process("resonate-sdk", cmd) is None:
                return None
            posts.append(proxy.counts()[0] - before)
    return (posts[1] - posts[0]) / n


def _ratio(figure: Figure, peer_value: float) -> float:
    if figure.value <= 0 or peer_value <= 0:
        return float("nan")
    return figure.value / peer_value if figure.higher else peer_value / figure.value


def report(figure: Figure, mode: str, peers: dict[str, dict[str, float]]) -> None:
    """Print ``name@mode value unit`` and the ratio to each peer figure of the same name."""
    line = f"{figure.name}@{mode} {figure.value:.6g} {figure.unit}"
    ratios = [f"x{_ratio(figure, v):.3g} vs {tag}"
              for tag, v in sorted(peers.get(figure.name, {}).items())]
    if ratios:
        line += "  " + ", ".join(ratios)
    print(line, flush=True)


def run_memory(mode: str, url: str | None, quick: bool,
               postgres_url: str | None = None) -> list[Figure]:
    cmd = [sys.executable, "-m", "benchmarks._memory", f"--mode={mode}"]
    if url is not None:
        cmd.append(f"--url={url}")
    if quick:
        cmd.append("--quick")
    env = dict(os.environ)
    if postgres_url is not None:  # the run's server, not one more of its own
        env[POSTGRES_ENV] = postgres_url
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT,
                          cwd=Path(__file__).parent.parent, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory benchmark ({mode}) failed:\n{proc.stderr}")
    figures = []
    for line in proc.stdout.splitlines():
        name, value, unit = line.split()[:3]
        figures.append(Figure(name, float(value), unit, False))
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"workloads (default all): {', '.join(NAMES)}")
    parser.add_argument("--mode", action="append", choices=MODES,
                        help="memory, sqlite, http or postgres (repeatable; default all)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (median)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=PYTHON",
                        help="run peer NAME (resonate-sdk, dbos) with interpreter PYTHON")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}: choose from {', '.join(NAMES)}")
    modes = args.mode or list(MODES)
    sizes = QUICK if args.quick else Sizes()
    if args.reps is not None:
        sizes = Sizes(**{**sizes.__dict__, "reps": args.reps})
    pythons = {} if args.no_peers else {
        peer: os.environ[env] for peer, (_, env) in PEERS.items() if os.environ.get(env)}
    for spec in args.peer:
        peer, _, python = spec.partition("=")
        if peer not in PEERS or not python:
            parser.error(f"--peer {spec!r}: give NAME=PYTHON with NAME in {', '.join(PEERS)}")
        pythons[peer] = os.path.abspath(python) if os.sep in python else python
    quiet_logs()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores, {platform.machine()}, backend {args.backend}"
          f"{', quick' if args.quick else ''}", flush=True)
    with ExitStack() as stack:
        url = stack.enter_context(dev_server()) if "http" in modes else None
        # one PostgreSQL server for the run: the postgres mode and DBOS on PostgreSQL share it
        pg_url = stack.enter_context(postgres()) if "postgres" in modes else None
        shared = [n for n in names if n in ("seq_steps", "fanout", "roots", "seq_rpc", "rtt")]
        peers = run_peers(pythons, shared, sizes, args.quick, url, pg_url) if shared else {}
        measured: dict[str, float] = {}
        failed: list[str] = []
        for mode in modes:
            with connector(mode, url, pg_url) as connect:
                for name in names:
                    if name in HTTP_ONLY and mode != "http":
                        continue
                    if name in POSTGRES_ONLY and mode != "postgres":
                        continue
                    started = time.perf_counter()
                    try:
                        if name == "memory":
                            figures = run_memory(mode, url, args.quick, pg_url)
                        else:
                            figures = anyio.run(ALL_WORKLOADS[name], connect, sizes,
                                                backend=args.backend)
                    except Exception as exc:  # one broken workload must not hide the rest
                        failed.append(f"{name}@{mode}")
                        print(f"# {name}@{mode} FAILED: {type(exc).__name__}: {exc}", flush=True)
                        traceback.print_exc()
                        continue
                    for figure in figures:
                        report(figure, mode, peers)
                        measured[f"{figure.name}@{mode}"] = figure.value
                    print(f"# {name}@{mode} took {time.perf_counter() - started:.1f}s",
                          flush=True)
    points = curve(measured)
    if points:
        print("# roots@http by requests in flight: "
              + ", ".join(f"{k}: {v:.0f}/s" for k, v in points), flush=True)
    print("# targets (issues 13 and 12)", flush=True)
    for row in summary(measured, peers):
        print(f"# {row}", flush=True)
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)} (tracebacks above); "
                         "their figures are missing from the table")
