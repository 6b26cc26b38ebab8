"""Shared test configuration: every async test runs on both anyio backends.

``anyio_mode = "auto"`` (pyproject.toml) marks every ``async def`` test for anyio's plugin;
the ``anyio_backend`` fixture below runs each of them on asyncio and on trio.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
