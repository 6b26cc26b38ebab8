"""Testing durable functions: a virtual clock, crash-and-replay checks, execution trees.

``pip install resonate-async`` also installs a pytest plugin with a ``resonate`` fixture: an
embedded ``Resonate`` whose clock (``resonate.clock``, a ``VirtualClock``) lets a workflow that
sleeps a week finish in milliseconds while the test awaits its result (time stands still
while the test polls or sleeps on its own). ``attach(app_resonate)`` runs an application's
own module-level instance the same way; ``wait_for_promise`` waits for an approval promise.

    async def test_reminder(resonate):
        @resonate.register
        async def remind(ctx, who):
            await ctx.sleep(timedelta(days=7))
            return f"ping {who}"

        handle = await resonate.run("reminder-1", remind, "ana")
        assert await handle == "ping ana"
        report = await check_replay(resonate, remind, "ana")
        assert "sleep" in await render_execution(resonate, "reminder-1")
"""

from resonate_async.testing._clock import VirtualClock
from resonate_async.testing._inspect import (
    Step,
    execution_records,
    execution_tree,
    render_execution,
)
from resonate_async.testing._kit import Kit, attach, wait_for_promise
from resonate_async.testing._replay import ReplayCheckError, ReplayReport, check_replay
from resonate_async.testing._simulation import busy, side_effect, simulate
from resonate_async.testing._simulation_model import (
    SKIP_TAG,
    Faults,
    SimulationError,
    SimulationReport,
    Workflow,
)

__all__ = [
    "SKIP_TAG",
    "Faults",
    "Kit",
    "ReplayCheckError",
    "ReplayReport",
    "SimulationError",
    "SimulationReport",
    "Step",
    "VirtualClock",
    "Workflow",
    "attach",
    "busy",
    "check_replay",
    "execution_records",
    "execution_tree",
    "render_execution",
    "side_effect",
    "simulate",
    "wait_for_promise",
]
