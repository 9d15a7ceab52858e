"""Keepalive: a silent peer is declared dead on time; a slow consumer never is."""

from __future__ import annotations

import pytest
import trio

from tests.client.helpers import drive, expected_transactions, signatures, until_ready
from tests.conftest import SECRET_KEY
from trio_backtest import (
    KEEPALIVE_INTERVAL,
    KEEPALIVE_MISS_DEADLINE,
    ClientConfig,
    Completed,
    ContinueParams,
    CreateSession,
    DisconnectCause,
    Reconnecting,
    Up,
    open_backtest_session,
)
from trio_backtest._plumbing import Counters
from trio_backtest._transport import Dead, Link, WebSocket
from trio_backtest.server import LocalServer


async def test_black_holed_control_is_declared_dead_at_the_exact_time(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=3, disconnect_timeout_secs=300)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        opened = trio.current_time()
        await until_ready(session)
        # The first ping goes out one interval after the connection opened and its
        # pong is the last sign of life; then the server goes silent.
        await trio.sleep_until(opened + KEEPALIVE_INTERVAL + 1)
        server.faults.black_hole("control")
        status = await session.status.wait_for(lambda s: isinstance(s, Reconnecting))
        assert trio.current_time() == pytest.approx(
            opened + KEEPALIVE_INTERVAL + KEEPALIVE_MISS_DEADLINE, abs=1e-6
        )
        assert status.cause == DisconnectCause.keepalive()
        await session.status.wait_for(lambda s: isinstance(s, Up))
        await session.send_continue(ContinueParams(advance_count=10))
        events = await drive(session)
    assert isinstance(events[-1], Completed)
    assert session.statistics().reconnects == {"control": 1}


async def test_black_holed_subscription_is_reconnected(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=19, disconnect_timeout_secs=300)
    program = server.ledger.programs[0]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        handle = await session.subscribe_transactions([program])
        up_at = trio.current_time()
        server.faults.black_hole("data")
        await handle.status.wait_for(lambda s: isinstance(s, Reconnecting))
        # No frame at all since the subscription came up: dead one deadline later.
        assert trio.current_time() == pytest.approx(up_at + KEEPALIVE_MISS_DEADLINE, abs=1e-6)
        events = await drive(session, stride=5)
    assert signatures(events) == expected_transactions(server, [program], 0, 19)


async def test_a_consumer_stalled_for_ten_minutes_causes_no_reconnect(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=199, disconnect_timeout_secs=60)
    programs = server.ledger.programs[:4]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions(programs)
        await until_ready(session)
        await session.send_continue(ContinueParams(advance_count=200))
        await trio.sleep(600)  # the user is busy; every buffer fills up
        assert len(server.executed_slots(session.info.session_id)) < 200  # back-pressure held
        events = await drive(session)
        stats = session.statistics()
    assert stats.reconnects == {"control": 0, "transactions[0]": 0}
    assert signatures(events) == expected_transactions(server, programs, 0, 199)
    assert isinstance(events[-1], Completed)


class _CountingWebSocket(WebSocket):
    """A `WebSocket` whose pings are counted and whose messages come on demand."""

    def __init__(self) -> None:
        self.pings: list[float] = []
        self.inbox_send, self.inbox = trio.open_memory_channel[str](1)

    async def receive(self) -> str:
        return await self.inbox.receive()

    async def send(self, message: str) -> None:
        raise AssertionError("nothing is sent here")  # pragma: no cover

    async def ping(self, payload: bytes) -> None:
        self.pings.append(trio.current_time())

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        pass  # pragma: no cover

    async def abort(self) -> None:
        pass  # pragma: no cover


async def test_no_ping_while_the_owner_is_busy_with_the_user(
    autojump_clock: trio.abc.Clock,
) -> None:
    # While the manager hands a message to a slow user nothing is silent (no silence is
    # counted), and a ping would only race a peer gone after its close frame: it aborts
    # trio-websocket's connection, which drops the message its reader holds.
    ws = _CountingWebSocket()
    link = Link(ws, ClientConfig(), 1, Counters())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(link.keepalive, nursery)
        await trio.sleep(5 * KEEPALIVE_INTERVAL + 1)  # busy elsewhere: not in receive
        assert ws.pings == []
        began = trio.current_time()

        async def answer_later() -> None:
            await trio.sleep(2 * KEEPALIVE_INTERVAL + 1)
            await ws.inbox_send.send("hello")

        nursery.start_soon(answer_later)
        assert await link.receive() == "hello"  # waiting: the pings go on
        nursery.cancel_scope.cancel()
    assert len(ws.pings) == 2
    assert all(began < t <= began + 2 * KEEPALIVE_INTERVAL + 1 for t in ws.pings)


async def test_a_reply_is_timed_only_while_waiting_for_it(autojump_clock: trio.abc.Clock) -> None:
    # client.md §4: a slow consumer never causes a false verdict; during a reconnect's
    # handshake the time spent handing the replay to the user does not count.
    ws = _CountingWebSocket()
    link = Link(ws, ClientConfig(), 1, Counters())
    began = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def answer_after(seconds: float) -> None:
            await trio.sleep(seconds)
            await ws.inbox_send.send("part of the replay")

        nursery.start_soon(answer_after, 4)
        with link.awaiting_reply("the answer", 10.0):
            assert await link.receive() == "part of the replay"  # 4 s of waiting
            await trio.sleep(100)  # handing it to a slow user: not counted
            with pytest.raises(Dead) as info:
                await link.receive()  # 6 s left
    assert trio.current_time() - began == pytest.approx(4 + 100 + 6)
    assert info.value.cause == DisconnectCause.timeout("the answer")
