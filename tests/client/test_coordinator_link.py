"""The coordinator's reason to exist: sub-sessions sharing one saturated link recover."""

from __future__ import annotations

import pytest
import trio

from tests.conftest import SECRET_KEY
from trio_backtest import (
    RECONNECT_MAX_BACKOFF,
    ClientConfig,
    Completed,
    ContinueParams,
    CreateSession,
    ManagedEvent,
    ParallelSubSession,
    Parked,
    ReadyForContinue,
    ReconnectCoordinator,
    Transaction,
    Up,
    open_backtest_session,
    open_parallel_session,
)
from trio_backtest.server import Link, open_local_server


async def test_eight_sub_sessions_on_one_link_all_recover(autojump_clock: trio.abc.Clock) -> None:
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=1, bundle_size=25) as srv:
        # About one stream's worth of bandwidth for all eight.
        connector = srv.connector(link=Link(200_000))
        # Gate every reconnect attempt, so the drop below goes through the coordinator.
        config = ClientConfig(reconnect_ungated_attempts=0)
        create = CreateSession(start_slot=0, end_slot=199, disconnect_timeout_secs=600)
        programs = srv.ledger.programs
        events: dict[str, list[ManagedEvent]] = {}
        parked_seen: set[str] = set()
        async with open_parallel_session(
            srv.url, SECRET_KEY, create, connector=connector, config=config
        ) as batch:
            assert len(batch.sub_sessions) == 8
            for sub in batch.sub_sessions:
                await sub.subscribe_transactions(programs)

            async def run(sub: ParallelSubSession) -> None:
                seen: list[ManagedEvent] = []
                async for event in sub.events():
                    seen.append(event)
                    if isinstance(event, ReadyForContinue):
                        await sub.send_continue(ContinueParams(advance_count=10))
                events[sub.info.session_id] = seen

            async def watch(sub: ParallelSubSession) -> None:
                (handle,) = sub.subscriptions
                await handle.status.wait_for(lambda s: isinstance(s, Parked))
                parked_seen.add(sub.info.session_id)

            async with trio.open_nursery() as nursery:
                for sub in batch.sub_sessions:
                    nursery.start_soon(run, sub)
                    nursery.start_soon(watch, sub)
                await trio.sleep(5)
                srv.faults.drop("data")  # every stream at once
            stats = batch.statistics()
    assert stats.coordinator.max_parked == 7
    assert len(parked_seen) == 8  # every sub-session waited its turn
    for sub in batch.sub_sessions:
        start, end = sub.range
        expected = [
            tx.signature
            for slot in range(start, end + 1)
            for tx in srv.ledger.slot(slot).transactions
        ]
        seen = events[sub.info.session_id]
        got = [e.signature for e in seen if isinstance(e, Transaction)]
        # Exactly once; the addresses' replays may interleave after the drop.
        assert len(got) == len(set(got)) == len(expected)
        assert set(got) == set(expected)
        assert isinstance(seen[-1], Completed)
        assert stats.sub_sessions[sub.info.session_id].reconnects["transactions[0]"] == 1


async def test_parking_is_bounded_when_the_link_never_frees(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Another stream holds the link for good (think of a driver that waits for this
    # session before it lets the others finish): the parked attempt goes ahead after
    # RECONNECT_MAX_BACKOFF instead of waiting forever.
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False) as srv:
        coordinator = ReconnectCoordinator()
        config = ClientConfig(reconnect_ungated_attempts=0)
        create = CreateSession(start_slot=0, slot_count=9, disconnect_timeout_secs=600)
        with coordinator.enter():  # the stream that never ends
            async with open_backtest_session(
                srv.url, SECRET_KEY, create, connector=srv.connector(), config=config,
                coordinator=coordinator,
            ) as session:  # fmt: skip
                (handle,) = [await session.subscribe_transactions(srv.ledger.programs[:1])]
                dropped_at = trio.current_time()
                srv.faults.drop("data")
                await handle.status.wait_for(lambda s: isinstance(s, Parked))
                await handle.status.wait_for(lambda s: isinstance(s, Up))
                assert trio.current_time() - dropped_at == pytest.approx(
                    RECONNECT_MAX_BACKOFF, abs=1e-6
                )
                stats = session.statistics()
    assert stats.parked_seconds == pytest.approx(RECONNECT_MAX_BACKOFF, abs=1e-6)
    assert coordinator.statistics().parks == 1
