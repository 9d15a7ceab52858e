"""Helpers for testing your own code against the local server, without sockets.

Typical use, under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``)::

    async with open_memory_server(seed=1) as server:
        connector = server.connector()            # in-memory, back-pressure like TCP
        server.faults.drop("control", after_messages=10)
        ...                                       # drive your client with `connector`
        assert server.statistics().faults_fired["drop"] == 1

Everything here is re-exported from :mod:`trio_backtest.server`, except two additions:
:func:`open_memory_server`, the no-TCP default tests want, and
:func:`open_client_websocket`, the client's end of a connection, for a fake server of your
own: serve one end of a :func:`memory_pipe_pair` as you like, and open the client's
WebSocket over the other end in a connector.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ._transport import UpgradeFailed as UpgradeFailed
from ._transport import open_client_websocket as open_client_websocket
from .server import ChaosConfig as ChaosConfig
from .server import Delivery as Delivery
from .server import FaultControls as FaultControls
from .server import Link as Link
from .server import LocalServer as LocalServer
from .server import MemoryConnector as MemoryConnector
from .server import ServerStatistics as ServerStatistics
from .server import memory_pipe_pair as memory_pipe_pair
from .server import open_local_server

__all__ = [
    "ChaosConfig",
    "Delivery",
    "FaultControls",
    "Link",
    "LocalServer",
    "MemoryConnector",
    "ServerStatistics",
    "UpgradeFailed",
    "memory_pipe_pair",
    "open_client_websocket",
    "open_memory_server",
]


@asynccontextmanager
async def open_memory_server(**options: Any) -> AsyncIterator[LocalServer]:
    """A local server reachable only through :meth:`LocalServer.connector` (no TCP listener).

    Takes the keyword arguments of :func:`trio_backtest.server.open_local_server`
    except ``tcp``.
    """
    if "tcp" in options:
        raise TypeError("open_memory_server never listens on TCP; use open_local_server")
    async with open_local_server(tcp=False, **options) as server:
        yield server
