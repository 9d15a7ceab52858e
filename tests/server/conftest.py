"""Fixtures of the local-server tests: a server on the in-memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import SECRET_KEY
from trio_backtest.server import LocalServer, open_local_server


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    """A memory-only server (seed 7, 20 transactions per slot) accepting ``SECRET_KEY``."""
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=7) as srv:
        yield srv
