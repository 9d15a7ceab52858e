"""The managed session end to end: the happy path, events(), readiness, statistics."""

from __future__ import annotations

import pytest
import trio

from tests.client.helpers import (
    diff_keys,
    drive,
    expected_diffs,
    expected_transactions,
    signatures,
    until_ready,
)
from tests.conftest import SECRET_KEY
from trio_backtest import (
    Completed,
    ContinueParams,
    CreateSession,
    NotReadyError,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
    open_backtest_session,
)
from trio_backtest.protocol import InvalidTransactionEncoding
from trio_backtest.server import LocalServer, open_local_server


async def test_happy_path_over_loopback_tcp() -> None:
    # Real sockets, real time: the integration test of the default connector.
    async with open_local_server(api_keys=(SECRET_KEY,), seed=3) as srv:
        start, end = 5_000, 5_199
        create = CreateSession(start_slot=start, end_slot=end, send_summary=True)
        programs = srv.ledger.programs[:2]
        with trio.fail_after(60):
            async with open_backtest_session(srv.url, SECRET_KEY, create) as session:
                assert session.info.rpc_endpoint.startswith("ws://127.0.0.1:")
                await session.subscribe_transactions(programs)
                await session.subscribe_account_diffs([programs[0]])
                events = await drive(session, stride=50)
                stats = session.statistics()
        assert srv.executed_slots(session.info.session_id) == list(range(start, end + 1))
    assert signatures(events) == expected_transactions(srv, programs, start, end)
    assert diff_keys(events) == expected_diffs(srv, [programs[0]], start, end)
    assert [e.slot for e in events if isinstance(e, Slot)] == list(range(start, end + 1))
    assert sum(isinstance(e, ReadyForContinue) for e in events) == 4
    completed = events[-1]
    assert isinstance(completed, Completed)
    assert completed.summary is not None
    assert completed.summary["slotsExecuted"] == 200
    assert stats.reconnects == {"control": 0, "transactions[0]": 0, "account_diffs[0]": 0}
    assert stats.events["Transaction"] == len(signatures(events))


async def test_continue_while_not_ready_raises_and_sends_nothing(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=100, slot_count=9)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        with pytest.raises(NotReadyError):  # nothing delivered yet
            await session.send_continue()
        await until_ready(session)
        await session.send_continue(ContinueParams(advance_count=2))
        with pytest.raises(NotReadyError):  # that ready was answered already
            await session.send_continue()
        await trio.sleep(1)
        assert server.executed_slots(session.info.session_id) == [100, 101]


async def test_continue_until_ready_and_continue_to(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=10, slot_count=20)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await until_ready(session)
        seen: list[object] = []
        batch = await session.continue_until_ready(
            ContinueParams(advance_count=3), on_event=seen.append
        )
        assert batch == seen
        assert [e.slot for e in batch if isinstance(e, Slot)] == [11, 12, 13]
        assert isinstance(batch[-1], ReadyForContinue)
        await session.send_continue_to(15, 1)
        events = []
        async for event in session.events():
            events.append(event)
            if isinstance(event, Paused):
                break  # leaving events() early is safe
        assert events[-1] == Paused(slot=15, batch_index=1)
        rest = await session.continue_until_ready(ContinueParams(advance_count=100))
        assert isinstance(rest[-1], Completed)
        with pytest.raises(trio.EndOfChannel):
            await session.next_event()


async def test_snake_case_server_is_understood(autojump_clock: trio.abc.Clock) -> None:
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, snake_case=True) as srv:
        create = CreateSession(start_slot=0, slot_count=4, disconnect_timeout_secs=30)
        async with open_backtest_session(
            srv.url, SECRET_KEY, create, connector=srv.connector()
        ) as session:
            await session.subscribe_transactions(srv.ledger.programs[:1])
            events = await drive(session, stride=2)
    assert signatures(events) == expected_transactions(srv, srv.ledger.programs[:1], 0, 4)
    assert isinstance(events[-1], Completed)


async def test_a_refused_continue_leaves_the_session_ready(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=3)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await until_ready(session)
        refused = await session.continue_until_ready(ContinueParams(transactions=("%%%",)))
        assert isinstance(refused[-1], ServerError)
        assert isinstance(refused[-1].error, InvalidTransactionEncoding)
        assert session.ready
        assert server.executed_slots(session.info.session_id) == []
        rest = await session.continue_until_ready(ContinueParams(advance_count=10))
        assert isinstance(rest[-1], Completed)
