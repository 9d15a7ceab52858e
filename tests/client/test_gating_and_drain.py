"""Gating of continues on connection health, and the drain before `Completed`."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.client.helpers import (
    SlowReader,
    drive,
    expected_transactions,
    signatures,
    until_ready,
)
from tests.conftest import SECRET_KEY
from trio_backtest import (
    DRAIN_TIMEOUT,
    Completed,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Reconnecting,
    Slot,
    Transaction,
    Up,
    open_backtest_session,
)
from trio_backtest.server import LocalServer, open_local_server


async def test_continue_waits_while_a_subscription_is_down(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=9, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        handle = await session.subscribe_transactions(server.ledger.programs[:1])
        await until_ready(session)
        server.faults.refuse_upgrades(3, status=500, plane="data")
        server.faults.drop("data")
        await handle.status.wait_for(lambda s: isinstance(s, Reconnecting))
        sent = trio.Event()

        async def continue_() -> None:
            await session.send_continue(ContinueParams(advance_count=3))
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(continue_)
            await trio.sleep(0.1)  # the subscription is still refused
            assert not sent.is_set()
            assert server.executed_slots(session.info.session_id) == []
            await handle.status.wait_for(lambda s: isinstance(s, Up))
        assert sent.is_set()
        events = []
        async for event in session.events():
            events.append(event)
            if isinstance(event, ReadyForContinue):
                break
        assert server.executed_slots(session.info.session_id) == [0, 1, 2]


async def test_trailing_notifications_arrive_before_completed(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A busy last slot, and a data plane read more slowly than the control plane:
    # `completed` reaches the client while the tail of the stream is still buffered.
    async with open_local_server(
        api_keys=(SECRET_KEY,), tcp=False, transactions_per_slot=300.0, seed=11
    ) as srv:
        inner = srv.connector()

        async def connector(nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
            conn = await inner(nursery, url, **kwargs)
            return conn if url.endswith("/backtest") else SlowReader(conn, 0.01)

        programs = srv.ledger.programs
        create = CreateSession(start_slot=0, slot_count=2, disconnect_timeout_secs=60)
        async with open_backtest_session(
            srv.url, SECRET_KEY, create, connector=connector
        ) as session:
            await session.subscribe_transactions(programs)
            events = await drive(session, stride=3)
    expected = expected_transactions(srv, programs, 0, 2)
    assert signatures(events) == expected
    assert isinstance(events[-1], Completed)
    last_tx = max(i for i, e in enumerate(events) if isinstance(e, Transaction))
    assert last_tx == len(events) - 2


class _NeverClosed:
    """A WebSocket stand-in for a peer that never closes a finished stream: the close
    looks like silence, and pings are still answered."""

    def __init__(self, inner: WebSocketConnection) -> None:
        self._inner = inner

    async def get_message(self) -> str | bytes:
        try:
            return await self._inner.get_message()
        except ConnectionClosed:
            await trio.sleep_forever()
            raise  # pragma: no cover

    async def ping(self, payload: bytes | None = None) -> None:
        with suppress(ConnectionClosed):
            await self._inner.ping(payload)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_completed_after_the_drain_timeout_when_the_stream_never_ends(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    inner = server.connector()

    async def connector(nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
        conn = await inner(nursery, url, **kwargs)
        return conn if url.endswith("/backtest") else _NeverClosed(conn)

    program = server.ledger.programs[0]
    create = CreateSession(start_slot=0, slot_count=4, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=connector
    ) as session:
        await session.subscribe_transactions([program])
        await until_ready(session)
        await session.send_continue(ContinueParams(advance_count=5))
        seen = []
        with trio.fail_after(10 * DRAIN_TIMEOUT):  # a missing drain bound would hang here
            async for event in session.events():
                seen.append((trio.current_time(), event))
    completed_at, completed = seen[-1]
    assert isinstance(completed, Completed)
    last_slot_at = max(t for t, e in seen if isinstance(e, Slot))
    assert completed_at == pytest.approx(last_slot_at + DRAIN_TIMEOUT, abs=1e-6)
    got = [e.signature for _, e in seen if isinstance(e, Transaction)]
    assert got == expected_transactions(server, [program], 0, 4)
