"""Parallel batches: concurrent sub-sessions over one multiplexed control connection."""

from __future__ import annotations

import trio

from tests.client.helpers import drive, expected_transactions, signatures, until_ready
from tests.conftest import SECRET_KEY
from trio_backtest import (
    Completed,
    ContinueParams,
    CreateSession,
    ManagedEvent,
    ParallelSubSession,
    ServerError,
    Slot,
    open_parallel_session,
)
from trio_backtest.protocol import InvalidTransactionEncoding
from trio_backtest.server import LocalServer, open_local_server


async def _drive_all(
    subs: tuple[ParallelSubSession, ...], stride: int
) -> dict[str, list[ManagedEvent]]:
    results: dict[str, list[ManagedEvent]] = {}

    async def one(sub: ParallelSubSession) -> None:
        results[sub.info.session_id] = await drive(sub, stride=stride)

    async with trio.open_nursery() as nursery:
        for sub in subs:
            nursery.start_soon(one, sub)
    return results


async def test_three_bundle_batch_over_loopback_tcp() -> None:
    async with open_local_server(api_keys=(SECRET_KEY,), seed=5, bundle_size=50) as srv:
        program = srv.ledger.programs[0]
        create = CreateSession(start_slot=100, end_slot=249, disconnect_timeout_secs=60)
        with trio.fail_after(60):
            async with open_parallel_session(srv.url, SECRET_KEY, create) as batch:
                subs = batch.sub_sessions
                assert [s.range for s in subs] == [(100, 149), (150, 199), (200, 249)]
                for sub in subs:
                    await sub.subscribe_transactions([program])
                results = await _drive_all(subs, stride=20)
                stats = batch.statistics()
    for sub in subs:
        events = results[sub.info.session_id]
        start, end = sub.range
        assert signatures(events) == expected_transactions(srv, [program], start, end)
        assert [e.slot for e in events if isinstance(e, Slot)] == list(range(start, end + 1))
        assert isinstance(events[-1], Completed)
        assert srv.executed_slots(sub.info.session_id) == list(range(start, end + 1))
    assert stats.control_reconnects == 0
    assert len(stats.sub_sessions) == 3


async def test_one_failing_sub_session_leaves_the_others_running(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, end_slot=299, disconnect_timeout_secs=60)
    async with open_parallel_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as batch:
        bad, *good = batch.sub_sessions
        results: dict[str, list[ManagedEvent]] = {}

        async def fail(sub: ParallelSubSession) -> None:
            await until_ready(sub)
            await sub.send_continue(ContinueParams(transactions=("not base64!",)))
            event = await sub.next_event()
            while not isinstance(event, ServerError):
                event = await sub.next_event()
            results[sub.info.session_id] = [event]
            await sub.aclose()

        async def run(sub: ParallelSubSession) -> None:
            results[sub.info.session_id] = await drive(sub, stride=25)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, bad)
            for sub in good:
                nursery.start_soon(run, sub)
    (error,) = results[bad.info.session_id]
    assert isinstance(error, ServerError)
    assert isinstance(error.error, InvalidTransactionEncoding)
    for sub in good:
        assert isinstance(results[sub.info.session_id][-1], Completed)
    assert server.executed_slots(bad.info.session_id) == []


async def test_shared_control_drop_resumes_every_sub_session_exactly_once(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, end_slot=299, disconnect_timeout_secs=60)
    program = server.ledger.programs[2]
    async with open_parallel_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as batch:
        for sub in batch.sub_sessions:
            await sub.subscribe_transactions([program])
        server.faults.drop("control", after_messages=40)
        results = await _drive_all(batch.sub_sessions, stride=30)
        stats = batch.statistics()
    assert stats.control_reconnects == 1
    for sub in batch.sub_sessions:
        events = results[sub.info.session_id]
        start, end = sub.range
        assert [e.slot for e in events if isinstance(e, Slot)] == list(range(start, end + 1))
        assert signatures(events) == expected_transactions(server, [program], start, end)
        assert isinstance(events[-1], Completed)
