"""The pytest plugin of resonate_async (registered through the ``pytest11`` entry point).

Fixtures:

* ``resonate``: a running ``Resonate`` on a fresh embedded engine with a ``VirtualClock`` at
  ``resonate.clock`` (durable sleeps and timeouts pass instantly while the test awaits a
  handle or a kit helper, and not while it polls or sleeps on its own). Register your
  functions on it inside the test; to test an application's own module-level instance, use
  ``resonate_async.testing.attach`` in a fixture of yours. Needs anyio's pytest plugin
  (``@pytest.mark.anyio`` or ``anyio_mode = "auto"``); runs on asyncio and trio.
* ``virtual_clock``: the clock alone, for building your own ``Resonate(clock=...)``.

A ``resonate`` fixture defined in your own conftest.py takes precedence over this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resonate_async._client import Resonate
from resonate_async.testing._clock import VirtualClock


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A fresh ``VirtualClock`` that auto-advances while the test awaits the SDK."""
    return VirtualClock()


@pytest.fixture
async def resonate(virtual_clock: VirtualClock) -> AsyncIterator[Resonate]:
    """A running embedded ``Resonate`` on a virtual clock (``resonate.clock``)."""
    async with Resonate(clock=virtual_clock) as instance:
        yield instance
