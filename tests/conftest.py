"""Shared test configuration: every async test runs on both anyio backends.

``anyio_mode = "auto"`` (pyproject.toml) marks every ``async def`` test for anyio's plugin;
the ``anyio_backend`` fixture below runs each of them on asyncio and on trio.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from resonate_async import configure_logging

# The session's PostgreSQL (pg_server, pg_dsn), started only by the tests that use it.
pytest_plugins = ["tests._postgres"]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    """Every structlog event of the test, at DEBUG and above (logging restored after)."""
    configure_logging("DEBUG")
    try:
        with capture_logs() as captured:
            yield captured
    finally:
        configure_logging("WARNING")
        structlog.reset_defaults()
