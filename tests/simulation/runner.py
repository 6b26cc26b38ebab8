"""Run many simulation seeds: ``python -m tests.simulation --seeds 2000`` (``nox -s simulate``).

Prints the seeds run, the faults injected by kind, the workflows run and every failure with
the seed that reproduces it (``--seed N`` re-runs one seed alone, ``--verbose`` with logs).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import time
from collections import Counter
from typing import Any

import anyio
import structlog

from resonate_async.testing import SimulationReport, simulate
from tests.simulation.corpus import KINDS, PROFILES, environment, workload


def _quiet() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))


def run_seed(job: tuple[int, int, str, str, int]) -> SimulationReport:
    seed, count, profile, backend, workers = job
    app, env = environment(seed)
    if workers < 2:
        env["miskeyed"] = None  # a wrong-key worker needs another to do the work

    async def main() -> SimulationReport:
        return await simulate(app, workload(seed, count), seed=seed, faults=PROFILES[profile],
                              workers=workers, check=False, **env)

    report: SimulationReport = anyio.run(main, backend=backend)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.simulation")
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--workflows", type=int, default=8, help="workflows per seed")
    parser.add_argument("--workers", type=int, default=3, help="simulated worker processes")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="aggressive")
    parser.add_argument("--backend", choices=["asyncio", "trio", "both"], default="both",
                        help="'both' alternates seeds between the two")
    parser.add_argument("--jobs", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--verbose", action="store_true", help="worker logs (one seed)")
    args = parser.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else list(
        range(args.start, args.start + args.seeds))
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    jobs = [(s, args.workflows, args.profile, backends[s % len(backends)], args.workers)
            for s in seeds]
    if not args.verbose:
        _quiet()
    began = time.monotonic()
    faults: Counter[str] = Counter()
    events: Counter[str] = Counter()
    peak_claims = 0
    failures: list[SimulationReport] = []
    workflows = executions = steps = 0
    simulated = 0.0
    if args.jobs > 1 and len(jobs) > 1:
        pool: Any = multiprocessing.get_context("spawn").Pool(args.jobs, initializer=_quiet)
        results = pool.imap_unordered(run_seed, jobs, chunksize=4)
    else:
        pool, results = None, map(run_seed, jobs)
    try:
        for done, report in enumerate(results, 1):
            faults.update(report.faults)
            events.update(report.events)
            peak_claims = max(peak_claims, report.peak_claims)
            workflows += len(report.outcomes)
            executions += report.executions
            steps += report.steps
            simulated += report.simulated_seconds
            if not report.ok:
                failures.append(report)
                print(f"FAILED seed {report.seed}:", *report.violations[:10], sep="\n  ",
                      flush=True)
            if done % 100 == 0:
                print(f"... {done}/{len(jobs)} seeds, {len(failures)} failed", flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    print(f"seeds run: {len(jobs)} ({args.profile} faults; backends: {', '.join(backends)})")
    print(f"workflows: {workflows} ({args.workflows} per seed, {len(KINDS)} kinds), "
          f"step executions: {executions}, simulator steps: {steps}, "
          f"simulated time: {simulated / 3600:.1f} h")
    print(f"faults injected: {sum(faults.values())}")
    for kind, n in sorted(faults.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<18} {n}")
    print("environment events:")
    for kind, n in sorted(events.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<26} {n}")
    print(f"  {'peak claims per task':<26} {peak_claims} (one worker, at once)")
    print(f"failures: {len(failures)}"
          + (f" (seeds {', '.join(str(r.seed) for r in failures[:50])}; re-run one with "
             "--seed N)" if failures else " (nothing lost)"))
    print(f"wall time: {time.monotonic() - began:.1f}s")
    return 1 if failures else 0
