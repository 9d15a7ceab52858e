"""Fixtures for the managed-client tests: a local server on the in-memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import SECRET_KEY
from trio_backtest.server import LocalServer, open_local_server


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    """A local server reachable only through its in-memory connector."""
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=7) as srv:
        yield srv
