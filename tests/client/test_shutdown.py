"""Leaving the block: bounded, ordered, and with a lone error unwrapped."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from tests.client.helpers import until_ready
from tests.conftest import SECRET_KEY
from trio_backtest import (
    GRACEFUL_CLOSE_TIMEOUT,
    CreateSession,
    open_backtest_session,
)
from trio_backtest.server import LocalServer


class _Spy:
    """A WebSocket stand-in that records what the client does with it."""

    def __init__(self, inner: WebSocketConnection, name: str, log: list[str]) -> None:
        self._inner, self._name, self._log = inner, name, log
        self._closed = False

    async def send_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and "closeBacktestSession" in message:
            self._log.append("close request")
        await self._inner.send_message(message)

    async def aclose(self, code: int = 1000, reason: str | None = None) -> None:
        if not self._closed:  # the first close is the one that counts
            self._closed = True
            self._log.append(f"{self._name} closed")
        await self._inner.aclose(code, reason)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _spying(inner: Any, log: list[str]) -> Any:
    async def connector(nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
        name = "control" if url.endswith("/backtest") else "data"
        return _Spy(await inner(nursery, url, **kwargs), name, log)

    return connector


@pytest.mark.parametrize("how", ["normally", "by exception", "by outer cancellation"])
async def test_leaving_the_block_is_bounded_and_ordered(
    server: LocalServer, autojump_clock: trio.abc.Clock, how: str
) -> None:
    log: list[str] = []
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
    began = 0.0
    caught: list[KeyError] = []
    with trio.move_on_after(1_000) as outer:
        try:
            async with open_backtest_session(
                server.url, SECRET_KEY, create, connector=_spying(server.connector(), log)
            ) as session:
                await session.subscribe_transactions(server.ledger.programs[:2])
                await session.subscribe_account_diffs(server.ledger.programs[:1])
                await until_ready(session)
                began = trio.current_time()
                if how == "by exception":
                    raise KeyError("user code failed")
                if how == "by outer cancellation":
                    outer.cancel()
                    await trio.sleep_forever()
        except KeyError as exc:  # the lone error, unwrapped
            caught.append(exc)
    assert [e.args for e in caught] == ([("user code failed",)] if how == "by exception" else [])
    assert trio.current_time() - began <= GRACEFUL_CLOSE_TIMEOUT
    assert log.index("close request") > max(i for i, e in enumerate(log) if e == "data closed")
    assert log.count("data closed") == 2


async def test_shutdown_against_a_black_holed_server_is_bounded(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions(server.ledger.programs[:1])
        await until_ready(session)
        server.faults.black_hole("any")
        began = trio.current_time()
    assert trio.current_time() - began == pytest.approx(GRACEFUL_CLOSE_TIMEOUT, abs=1e-6)
