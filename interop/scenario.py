"""One scenario of resonate_async over HTTP, run against two servers.

``python interop/scenario.py [--server dev] [--server official]`` (both by default). For each
server the script starts, on 127.0.0.1 and on a free port, either our development server
(``python -m resonate_async dev``) or the official SDK's in-process server behind our HTTP
adapter (interop/official_server_adapter.py; needs ``resonate-sdk``, Python >= 3.12), then
three worker processes of its own (``flow`` in group ``flows``; ``worker-a`` and ``worker-b``
in group ``workers``), and runs one workflow, ``journey``, from a client that runs no work
(``worker=False``, in the group ``flows`` as the README shows a client):

1. a local step (``ctx.run``);
2. an rpc to another group (``ctx.rpc(...).options(target="workers")``);
3. fan-out: two spawned rpcs, one preferring each worker (``poll://any@workers/worker-a``),
   joined; each answers with the worker that ran it;
4. a remote error caught by the workflow (a ``ValueError`` raised on a worker);
5. a human-in-the-loop promise (``ctx.promise``) whose id a step publishes, settled by a
   separate client process (``scenario.py approve``);
6. detached work (``ctx.detached``), awaited by the client after the workflow completed;
7. a worker SIGKILLed while it holds a step; its lease lapses and the other worker finishes it;
8. a durable sleep (``ctx.sleep``), measured with ``ctx.now()`` steps around it.

Each check prints ``PASS`` or ``FAIL`` with the server it ran against; every wait is bounded
and a timeout prints what was still pending. Per server it prints the checks passed and the
requests by kind that the workflow's processes sent (counted by a wrapper around each
process's client transport; for the adapter also as the adapter counted them). Every process
started is stopped. Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from resonate_async import Context, PromiseRecord, Resonate, configure_logging
from resonate_async.protocol import Request, Response
from resonate_async.transport import HttpTransport, WrappedTransport

SELF = Path(__file__).resolve()
HERE = SELF.parent
SLEEP_SECONDS = 1.5
WORKER_TTL = 3.0  # seconds: how long a SIGKILLed worker's lease outlives it
STEP_BOUND = 120.0  # seconds any one wait of the scenario may take
WORKERS = ("worker-a", "worker-b")
WORKFLOW_CHECKS = ("local step", "rpc to another group", "fan-out over two workers",
                   "caught remote error", "human in the loop",
                   "SIGKILLed worker's work finished by another", "durable sleep",
                   "detached work")


# --------------------------------------------------------------------------------------------
# request counting (every process of the scenario)


class CountingTransport(WrappedTransport):
    """Appends every request sent to a per-process file, one line each (time, kind, ids,
    then the answer's status), so the counts of a SIGKILLed process survive it."""

    def __init__(self, inner: HttpTransport, log: Path) -> None:
        super().__init__(inner)
        self._log = log.open("a", buffering=1)

    async def send(self, request: Request) -> Response:
        ids = " ".join(f"{k}={v}" for k in ("id", "version", "awaited")
                       if isinstance(v := getattr(request, k, None), str | int))
        self._log.write(f"{datetime.now(UTC):%H:%M:%S.%f} {request.KIND} {ids}\n")
        response = await self.inner.send(request)
        self._log.write(f"{datetime.now(UTC):%H:%M:%S.%f}   -> {response.status}\n")
        return response


def client(url: str, run_dir: Path, role: str, **options: Any) -> Resonate:
    transport = CountingTransport(HttpTransport(url), run_dir / f"requests-{role}.log")
    return Resonate(transport=transport, **options)


def counted_requests(run_dir: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for log in run_dir.glob("requests-*.log"):
        counts.update(line.split()[1] for line in log.read_text().splitlines()
                      if len(line.split()) > 1 and line.split()[1] != "->")
    return counts


# --------------------------------------------------------------------------------------------
# the functions


def double(n: int) -> int:
    return n * 2


def publish(run_dir: str, promise_id: str) -> str:
    """Tell the outside world which promise to settle (here: a file the driver watches)."""
    (Path(run_dir) / "approval-id").write_text(promise_id)
    return promise_id


def hold_step(run_dir: str, me: str) -> str:
    """Mark that ``me`` holds this step; finish only if another worker held it before."""
    folder = Path(run_dir)
    (folder / f"hold-{me}").write_text(str(os.getpid()))
    deadline = time.monotonic() + STEP_BOUND
    while time.monotonic() < deadline:
        others = sorted(p.name[5:] for p in folder.glob("hold-*") if p.name != f"hold-{me}")
        if others:
            return f"{me} finished the step that {others[0]} held"
        time.sleep(0.05)  # a sync step runs in a worker thread: waiting to be killed
    raise TimeoutError(f"{me} held the step for {STEP_BOUND:g} s and nobody killed it")


def register_flow(resonate: Resonate) -> None:
    @resonate.register
    async def report(ctx: Context, run_dir: str) -> str:
        return "report by flow"

    @resonate.register
    async def journey(ctx: Context, run_dir: str) -> dict[str, Any]:
        doubled = await ctx.run(double, 21)
        served_by = await ctx.rpc("whoami", "rpc").options(target="workers")
        fan = [await ctx.rpc("whoami", f"fan-{w}").options(
            target=f"poll://any@workers/{w}").spawn() for w in WORKERS]
        fanned = [await h for h in fan]
        try:
            await ctx.rpc("fails", "boom").options(target="workers")
            caught = "nothing was raised"
        except ValueError as exc:
            caught = f"ValueError: {exc}"
        decision = await ctx.promise(timeout=STEP_BOUND * 2).spawn()
        await ctx.run(publish, run_dir, decision.id)
        approval = await decision
        detached = await ctx.detached("report", run_dir)  # to this group, flows
        held = await ctx.rpc("hold", run_dir).options(target="workers")
        before: datetime = await ctx.now()
        await ctx.sleep(SLEEP_SECONDS)
        after: datetime = await ctx.now()
        return {"doubled": doubled, "served_by": served_by, "fanned": fanned,
                "caught": caught, "approval": approval, "detached": detached.id,
                "held": held, "slept": (after - before).total_seconds()}


def register_workers(resonate: Resonate, me: str) -> None:
    @resonate.register
    async def whoami(ctx: Context, what: str) -> str:
        return f"{what} on {me}"

    @resonate.register
    async def fails(ctx: Context, what: str) -> str:
        raise ValueError(f"{what} from {me}")

    @resonate.register
    async def hold(ctx: Context, run_dir: str) -> str:
        return await ctx.run(hold_step, run_dir, me)


async def serve_worker(url: str, run_dir: Path, role: str) -> None:
    configure_logging("INFO")
    if role == "flow":
        resonate = client(url, run_dir, role, group="flows", pid=role)
        register_flow(resonate)
    else:
        resonate = client(url, run_dir, role, group="workers", pid=role, ttl=WORKER_TTL)
        register_workers(resonate, role)
    async with resonate:
        print("ready", flush=True)
        await resonate.serve()


async def approve(url: str, run_dir: Path, promise_id: str) -> None:
    configure_logging("DEBUG")
    resonate = client(url, run_dir, "approver", group="approvers", worker=False)
    async with resonate:
        await resonate.promises.resolve(promise_id, {"approved": True, "by": "approver"})


# --------------------------------------------------------------------------------------------
# processes


class Processes:
    """Every process the driver starts; ``stop_all`` stops each of them (SIGTERM, then
    SIGKILL after a bound)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, *argv: str) -> subprocess.Popen[str]:
        """Start ``python *argv``; its stderr (logs) goes to ``{run_dir}/{name}.log``."""
        with (self.run_dir / f"{name}.log").open("a") as log:
            proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                                    stderr=log, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started[name] = proc
        return proc

    async def first_line(self, name: str) -> str:
        proc = self.started[name]
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), STEP_BOUND)
        except TimeoutError:
            raise RuntimeError(f"{name} printed nothing in {STEP_BOUND:g} s") from None
        if not line:
            raise RuntimeError(f"{name} exited with {proc.wait()} before it was ready")
        return line.strip()

    def exited(self, expected: set[str]) -> str:
        """The processes that exited on their own, and how (for timeout messages)."""
        gone = [f"{name} exited with {proc.returncode}" for name, proc in self.started.items()
                if proc.poll() is not None and name not in expected]
        return "; ".join(gone) or "every process still running"

    def stop_all(self) -> None:
        """SIGTERM to the workers and clients (which may still talk to the server as they
        stop), then to the server; SIGKILL to any that is still running after 15 s."""
        servers = {"server"}
        for group in ([n for n in self.started if n not in servers], list(servers)):
            for name in group:
                proc = self.started.get(name)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for name in group:
                proc = self.started.get(name)
                if proc is None:
                    continue
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    print(f"     {name} did not stop on SIGTERM in 15 s: killed", flush=True)
                    proc.kill()
                    proc.wait()


# --------------------------------------------------------------------------------------------
# the driver


class Checks:
    def __init__(self, server: str) -> None:
        self.server = server
        self.passed = 0
        self.failed = 0

    def check(self, name: str, ok: bool, detail: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} [{self.server}] {name}: {detail}", flush=True)


async def bounded(what: str, waiting: Callable[[], Any], seconds: float = STEP_BOUND) -> Any:
    try:
        return await asyncio.wait_for(waiting(), seconds)
    except TimeoutError:
        raise TimeoutError(f"{what}: still pending after {seconds:g} s") from None


async def wait_for_file(pattern: str, folder: Path) -> Path:
    while True:
        found = await asyncio.to_thread(lambda: sorted(folder.glob(pattern)))
        if found:
            return found[0]
        await asyncio.sleep(0.05)


async def pending_report(resonate: Resonate, wid: str) -> str:
    """The states of the workflow's promises, for a timeout message: found by their
    ``resonate:origin`` tag where the server searches, else by the ids of the first
    children."""
    states = []
    try:
        async def search() -> None:
            async for record in resonate.promises.search(tags={"resonate:origin": wid}):
                states.append(_describe(record))
        await asyncio.wait_for(search(), 10)
        return ", ".join(states)
    except Exception as exc:
        states = [f"(promise.search failed: {type(exc).__name__})"]
    misses = 0
    for suffix in ["", *(f":{n}" for n in range(1, 21))]:
        try:
            record = await asyncio.wait_for(resonate.promises.get(wid + suffix), 10)
        except Exception:
            misses += 1
            if misses == 3:
                break
            continue
        misses = 0
        states.append(_describe(record))
    return ", ".join(states)


def _describe(record: PromiseRecord) -> str:
    timer = " timer" if record.tags.get("resonate:timer") == "true" else ""
    due = ""
    if record.state == "pending":
        left = (record.timeout_at - datetime.now(UTC)).total_seconds()
        due = f" (deadline in {left:.1f} s)" if left >= 0 else f" (deadline {-left:.1f} s ago)"
    return f"{record.id}{timer} {record.state}{due}"


async def run_against(server: str) -> Checks:
    checks = Checks(server)
    run_dir = Path(tempfile.mkdtemp(prefix=f"interop-{server}-"))
    procs = Processes(run_dir)
    try:
        if server == "dev":
            procs.start("server", "-m", "resonate_async", "dev", "--host", "127.0.0.1",
                        "--port", "0", "--log-level", "info")
        else:
            procs.start("server", str(HERE / "official_server_adapter.py"))
        line = await procs.first_line("server")
        if "listening on " not in line:
            raise RuntimeError(f"the {server} server did not start: {line!r}")
        url = line.rsplit(" ", 1)[1]
        print(f"     [{server}] server at {url}; logs and request counts in {run_dir}",
              flush=True)
        for role in ("flow", *WORKERS):
            procs.start(role, str(SELF), "worker", url, str(run_dir), role)
        for role in ("flow", *WORKERS):
            if (line := await procs.first_line(role)) != "ready":
                raise RuntimeError(f"worker {role} did not start: {line!r}")
        await drive(server, url, run_dir, procs, checks)
        stats: dict[str, Any] = {}
        if server == "official":
            stats = json.loads(await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"{url}/interop/stats", timeout=10).read()))
        check_no_work_for_clients(checks, run_dir, stats.get("work_to_clients", []))
        if stats:
            print(f"     [{server}] requests by kind, as the adapter counted them: "
                  f"{_by_kind(stats['requests'])}; answers: {_by_kind(stats['statuses'])}; "
                  f"pushes: {_by_kind(stats['pushes'])}; SSE connections: {stats['polls']}",
                  flush=True)
            if stats["dropped"]:
                print(f"     [{server}] messages dropped by the adapter (no open stream): "
                      f"{stats['dropped']}", flush=True)
    except Exception as exc:
        checks.check("scenario", False, f"{type(exc).__name__}: {exc}")
    finally:
        procs.stop_all()
    counts = counted_requests(run_dir)
    print(f"     [{server}] requests by kind, counted in each process's client transport "
          f"(driver, 3 workers, approver): {_by_kind(counts)}", flush=True)
    print(f"     [{server}] {checks.passed} of {checks.passed + checks.failed} checks passed",
          flush=True)
    return checks


def _value(task: asyncio.Future[str]) -> str | None:
    """The result of a finished task, ``None`` if it did not finish or failed."""
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def logged_warnings(run_dir: Path, most: int = 5) -> list[str]:
    """The distinct warnings and errors in the processes' logs (first ``most``)."""
    seen: dict[str, str] = {}
    for log in sorted(run_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "[warning" in line or "[error" in line or "Traceback" in line:
                text = line.split("]", 1)[-1].strip()
                seen.setdefault(text.split(" ", 1)[0], f"{log.stem}: {text[:400]}")
    return list(seen.values())[:most]


def check_no_work_for_clients(checks: Checks, run_dir: Path, seen_by_server: list[str]) -> None:
    """The driver and the approver run no work (``worker=False``): no ``execute`` may reach
    them, or the task waits for the server's retry timeout (30 s). Evidence: the client
    transport's ``execute_ignored`` log events, and what the adapter saw it send."""
    dropped = [line.split("task_id=")[-1].strip() for name in ("driver", "approver")
               if (run_dir / f"{name}.log").exists()
               for line in (run_dir / f"{name}.log").read_text().splitlines()
               if "execute_ignored" in line]
    evidence = [f"a client dropped execute {task}" for task in dropped] + seen_by_server
    checks.check("no work for clients", not evidence,
                 "no execute reached a worker=False client" if not evidence
                 else "; ".join(evidence))


def _by_kind(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} total, " + ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


async def drive(server: str, url: str, run_dir: Path, procs: Processes,
                checks: Checks) -> None:
    check = checks.check
    wid = f"journey-{os.getpid()}"
    configure_logging("DEBUG", stream=(run_dir / "driver.log").open("a", buffering=1))
    resonate = client(url, run_dir, "driver", group="flows", worker=False)
    async with resonate:
        handle = await bounded("starting the workflow",
                               lambda: resonate.rpc(wid, "journey", str(run_dir)))

        async def approve_when_published() -> str:
            promise_id = (await wait_for_file("approval-id", run_dir)).read_text()
            procs.start("approver", str(SELF), "approve", url,
                        str(run_dir), promise_id)
            code = await asyncio.to_thread(procs.started["approver"].wait)
            if code != 0:
                raise RuntimeError(f"the approver exited with {code}")
            return promise_id

        async def kill_the_holder() -> str:
            victim = (await wait_for_file("hold-*", run_dir)).name[5:]
            procs.started[victim].send_signal(signal.SIGKILL)
            await asyncio.to_thread(procs.started[victim].wait)
            return victim

        approver = asyncio.ensure_future(approve_when_published())
        killer = asyncio.ensure_future(kill_the_holder())
        try:
            result = await bounded(f"workflow {wid}", lambda: handle.result())
        except Exception as exc:
            report = await pending_report(resonate, wid)
            exits = procs.exited({"approver", _value(killer) or ""})
            check("workflow", False, f"{type(exc).__name__}: {exc} [{report}] [{exits}]")
            for name, task in (("approver", approver), ("killer", killer)):
                if not task.done():
                    print(f"     [{server}] still waiting: {name}", flush=True)
            for warning in logged_warnings(run_dir):
                print(f"     [{server}] logged: {warning}", flush=True)
            for name in WORKFLOW_CHECKS:
                check(name, False, "not checked: the workflow did not complete")
            return
        finally:
            for task in (approver, killer):
                task.cancel()
        check("workflow", True, f"{wid} resolved")
        check("local step", result["doubled"] == 42, f"ctx.run(double, 21) = {result['doubled']}")
        check("rpc to another group", result["served_by"] in {f"rpc on {w}" for w in WORKERS},
              f"ctx.rpc('whoami') in group workers: {result['served_by']!r}")
        want = [f"fan-{w} on {w}" for w in WORKERS]
        check("fan-out over two workers", result["fanned"] == want, f"{result['fanned']}")
        check("caught remote error", result["caught"].startswith("ValueError: boom from worker-"),
              result["caught"])
        check("human in the loop", result["approval"] == {"approved": True, "by": "approver"},
              f"settled by a separate client process: {result['approval']}")
        victim = _value(killer)
        survivor = next((w for w in WORKERS if w != victim), None)
        check("SIGKILLed worker's work finished by another",
              victim is not None and result["held"] ==
              f"{survivor} finished the step that {victim} held",
              f"{victim} was SIGKILLed holding the step; {result['held']!r}")
        check("durable sleep", result["slept"] >= SLEEP_SECONDS,
              f"ctx.sleep({SLEEP_SECONDS}) took {result['slept']:.2f} s between ctx.now() steps")
        try:
            detached_handle = await bounded("resonate.get", lambda: resonate.get(
                result["detached"]))
            detached = await bounded(f"detached {result['detached']}", detached_handle.result)
            check("detached work", detached == "report by flow",
                  f"{result['detached']} = {detached!r} (the workflow had completed)")
        except Exception as exc:
            check("detached work", False, f"{type(exc).__name__}: {exc}")


async def main(servers: list[str]) -> int:
    failed = 0
    for server in servers:
        failed += (await run_against(server)).failed
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(serve_worker(sys.argv[2], Path(sys.argv[3]), sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "approve":
        asyncio.run(approve(sys.argv[2], Path(sys.argv[3]), sys.argv[4]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--server", action="append", choices=["dev", "official"],
                            help="the server(s) to run against (default: both)")
        args = parser.parse_args()
        # SIGTERM (nox or CI stopping us) unwinds like Ctrl-C, so every process is stopped.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        sys.exit(asyncio.run(main(args.server or ["dev", "official"])))
