"""What a simulation is told and what it reports: fault rates, workflows, reports, errors."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

SKIP_TAG = "resonate_async:simulation"
"""Tag a ``ctx.promise()`` with ``{SKIP_TAG: "ignore"}`` and the simulator leaves it
unresolved (to exercise timeouts); every other external promise is resolved at a seeded time
with ``f"approved {promise_id}"``."""

FaultKind = Literal[
    "drop", "duplicate", "delay", "fail_before", "fail_after", "heartbeat_lost",
    "crash", "crash_before_send", "crash_after_send", "stop", "stall", "engine_restart",
    "duplicate_burst", "task_outage",
]


@dataclass(frozen=True)
class Faults:
    """Fault rates. Message and request rates are per message/request; process, engine and
    task-outage rates are per simulator step. ``Faults.none()`` gives a fault-free run.

    ``duplicate_burst``: a push message is delivered 10 to 60 times at once (an ``execute``
    storm). ``task_outage``: every lease-bound write (``task.fence``, ``task.fulfill``,
    ``task.suspend``) for one task fails for 10 to 90 simulated seconds, as from a server that
    cannot write that task's rows; its acquires and releases still succeed, so only the
    worker's back-off keeps it from a tight release/re-acquire loop.
    """

    drop: float = 0.05
    duplicate: float = 0.05
    delay: float = 0.1
    fail_before: float = 0.02
    fail_after: float = 0.02
    heartbeat_lost: float = 0.3
    crash_on_send: float = 0.01
    crash: float = 0.01
    stop: float = 0.005
    stall: float = 0.01
    engine_restart: float = 0.004
    duplicate_burst: float = 0.01
    task_outage: float = 0.003

    @classmethod
    def none(cls) -> Faults:
        """No faults at all (every probability 0): a run that checks the outcomes only."""
        return cls(**{name: 0.0 for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Workflow:
    """A root execution to run: ``fn(*args)`` as ``id``, started with ``run`` on a worker or
    with ``rpc`` (any worker claims it).

    With ``cancel_after``, the simulator cancels the root from outside that many simulated
    seconds after it started (``resonate.promises.cancel(id)`` from a worker's client, sent
    again a second later while faults make it fail), and checks that the root and its pending
    descendants end canceled, that nothing of it runs after the cancel returned, and that its
    detached work keeps running. Give it work that does not end on its own before then, so
    that the outcome (``rejected_canceled``) does not depend on timing."""

    id: str
    fn: Callable[..., Any] | str
    args: tuple[Any, ...] = ()
    via: Literal["run", "rpc"] = "run"
    cancel_after: float | None = None


@dataclass
class SimulationReport:
    """What one seed did and found."""

    seed: int
    outcomes: dict[str, str]
    faults: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    steps: int = 0
    simulated_seconds: float = 0.0
    executions: int = 0
    events: Counter[str] = field(default_factory=Counter)
    """What the simulated environment did that is not a fault: requests refused as too large,
    writes failed by a task outage, settlements attempted by a miskeyed worker, ..."""
    peak_claims: int = 0
    """The most ``execute`` messages one worker had waiting at once for one task."""

    @property
    def ok(self) -> bool:
        """Whether no invariant was violated."""
        return not self.violations

    def check(self) -> None:
        """Raise ``SimulationError`` if any invariant was violated."""
        if self.violations:
            raise SimulationError(self)


class SimulationError(AssertionError):
    """An invariant of durable execution broke under simulation; names the seed to re-run."""

    def __init__(self, report: SimulationReport) -> None:
        self.report = report
        lines = "\n  ".join(report.violations[:20])
        more = len(report.violations) - 20
        super().__init__(
            f"seed {report.seed}: {len(report.violations)} invariant violation(s) after "
            f"{report.steps} steps ({dict(report.faults)}):\n  {lines}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nre-run this seed alone: simulate(app, workflows, seed={report.seed}) "
            f"(nox -s simulate -- --seed {report.seed})")
