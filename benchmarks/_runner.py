"""The benchmark runner: peers first (in their own environments), then each mode's workloads.

Every figure is printed as ``name@mode value unit``, followed by how many times better it is
than each peer's figure of the same name measured in this run (``x12.3 vs dbos.sqlite``).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import anyio

from benchmarks._devserver import dev_server
from benchmarks._modes import MODES, connector, quiet_logs
from benchmarks._workloads import QUICK, WORKLOADS, Figure, Sizes

NAMES = (*WORKLOADS, "memory")
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


def run_peers(pythons: dict[str, str], names: list[str], sizes: Sizes, quick: bool,
              url: str | None) -> dict[str, dict[str, float]]:
    """Run each peer's script in its interpreter; ``{figure name: {peer tag: value}}``."""
    found: dict[str, dict[str, float]] = {}
    for peer, python in pythons.items():
        script = str(PEERS_DIR / PEERS[peer][0])
        size_args = [f"--steps={sizes.seq_steps}", f"--fanout={sizes.fanout}",
                     f"--roots={sizes.roots}", f"--rpc={sizes.seq_rpc[0]}",
                     f"--reps={sizes.reps}"]
        runs = [[]] if peer != "resonate-sdk" else [["--mode=local"]]
        if peer == "resonate-sdk" and url is not None:
            runs.append(["--mode=http", f"--url={url}"])
        for extra in runs:
            cmd = [python, script, *extra, *size_args, *(["--quick"] if quick else []), *names]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT,
                                      cwd=PEERS_DIR)
            except (OSError, subprocess.TimeoutExpired) as exc:
                print(f"# peer {peer} {' '.join(extra)} failed: {exc}", flush=True)
                continue
            figures = _parse(proc.stdout)
            for name, value, unit, tag in figures:
                print(f"{name}@{tag} {value:.6g} {unit}", flush=True)
                found.setdefault(name, {})[tag] = value
            if proc.returncode != 0:
                err = proc.stderr.strip().splitlines()[-3:]
                print(f"# peer {peer} {' '.join(extra)} exited {proc.returncode}: "
                      f"{' | '.join(err)}", flush=True)
    return found


def _ratio(figure: Figure, peer_value: float) -> float:
    if figure.value <= 0 or peer_value <= 0:
        return float("nan")
    return figure.value / peer_value if figure.higher else peer_value / figure.value


def report(figure: Figure, mode: str, peers: dict[str, dict[str, float]]) -> None:
    line = f"{figure.name}@{mode} {figure.value:.6g} {figure.unit}"
    ratios = [f"x{_ratio(figure, v):.3g} vs {tag}"
              for tag, v in sorted(peers.get(figure.name, {}).items())]
    if ratios:
        line += "  " + ", ".join(ratios)
    print(line, flush=True)


def run_memory(mode: str, url: str | None, quick: bool) -> list[Figure]:
    cmd = [sys.executable, "-m", "benchmarks._memory", f"--mode={mode}"]
    if url is not None:
        cmd.append(f"--url={url}")
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PEER_TIMEOUT,
                          cwd=Path(__file__).parent.parent)
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
                        help="memory, sqlite or http (repeatable; default all three)")
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
        pythons[peer] = python
    quiet_logs()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
          f"{os.cpu_count()} cores, {platform.machine()}, backend {args.backend}"
          f"{', quick' if args.quick else ''}", flush=True)
    with ExitStack() as stack:
        url = stack.enter_context(dev_server()) if "http" in modes else None
        shared = [n for n in names if n in ("seq_steps", "fanout", "roots", "seq_rpc")]
        peers = run_peers(pythons, shared, sizes, args.quick, url) if shared else {}
        for mode in modes:
            with connector(mode, url) as connect:
                for name in names:
                    started = time.perf_counter()
                    if name == "memory":
                        figures = run_memory(mode, url, args.quick)
                    else:
                        figures = anyio.run(WORKLOADS[name], connect, sizes,
                                            backend=args.backend)
                    for figure in figures:
                        report(figure, mode, peers)
                    print(f"# {name}@{mode} took {time.perf_counter() - started:.1f}s",
                          flush=True)
