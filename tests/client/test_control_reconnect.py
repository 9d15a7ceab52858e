"""Control drops: attach + resume, exactly-once control events, readiness across drops."""

from __future__ import annotations

import pytest
import trio

from tests.client.helpers import drive, expected_transactions, signatures, until_ready
from tests.conftest import SECRET_KEY
from trio_backtest import (
    Completed,
    ContinueParams,
    ControlFailedError,
    CreateSession,
    ReadyForContinue,
    Slot,
    Up,
    open_backtest_session,
)
from trio_backtest.server import LocalServer


async def test_drop_mid_continue_resumes_with_every_event_once(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=59, disconnect_timeout_secs=60)
    program = server.ledger.programs[0]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions([program])
        # Lose the control socket abruptly in the middle of the first stride.
        server.faults.drop("control", after_messages=12)
        events = await drive(session, stride=20)
        stats = session.statistics()
    assert stats.reconnects["control"] == 1
    assert [e.slot for e in events if isinstance(e, Slot)] == list(range(60))
    assert sum(isinstance(e, ReadyForContinue) for e in events) == 3
    assert isinstance(events[-1], Completed)
    assert signatures(events) == expected_transactions(server, [program], 0, 59)


async def test_non_resumable_session_drop_fails(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=30)
    with pytest.raises(ControlFailedError, match="not resumable"):
        async with open_backtest_session(
            server.url, SECRET_KEY, create, connector=server.connector()
        ) as session:
            server.faults.drop("control", after_messages=6)
            await drive(session, stride=10)


async def test_drop_while_idle_yields_no_duplicate_ready(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=9, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await until_ready(session)
        server.faults.drop("control")
        await trio.sleep(1)
        await session.status.wait_for(lambda s: isinstance(s, Up))
        assert session.statistics().reconnects["control"] == 1
        # The replay and the resume may repeat the ready; the user must not see it.
        await session.send_continue(ContinueParams(advance_count=4))
        events = []
        async for event in session.events():
            events.append(event)
            if isinstance(event, ReadyForContinue):
                await session.send_continue(ContinueParams(advance_count=10))
    assert [type(e).__name__ for e in events] == ["Slot"] * 4 + ["ReadyForContinue"] + [
        "Slot"
    ] * 5 + ["Completed"]


async def test_continue_lost_in_a_drop_surfaces_as_one_fresh_ready(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=120)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await until_ready(session)
        # The server hears nothing more on this socket: the continue is lost, and the
        # keepalive declares the connection dead, which reconnects and resumes.
        server.faults.black_hole("control")
        await session.send_continue(ContinueParams(advance_count=2))
        event = await session.next_event()
        assert isinstance(event, ReadyForContinue)
        assert session.statistics().reconnects["control"] == 1
        assert server.executed_slots(session.info.session_id) == []
        await session.send_continue(ContinueParams(advance_count=10))
        events = await drive(session, stride=10)
    assert [type(e).__name__ for e in events] == ["Slot"] * 5 + ["Completed"]
