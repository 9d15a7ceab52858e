"""Subscription drops: inclusive replay, exactly-once delivery, visible gaps, the tail."""

from __future__ import annotations

import random
from typing import Any

import trio

from tests.client.helpers import (
    SlowReader,
    attempts,
    diff_keys,
    drive,
    drop_again_and_again,
    expected_diffs,
    expected_transactions,
    signatures,
)
from tests.conftest import SECRET_KEY
from trio_backtest import (
    ClientConfig,
    Completed,
    CreateSession,
    StreamGap,
    open_backtest_session,
)
from trio_backtest.server import LocalServer


async def test_drop_mid_stream_is_replayed_exactly_once(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=79, disconnect_timeout_secs=60)
    programs = server.ledger.programs[:3]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions(programs)
        server.faults.drop("data", after_messages=150)
        events = await drive(session, stride=40)
        stats = session.statistics()
    assert stats.reconnects["transactions[0]"] == 1
    assert stats.duplicates_dropped > 0  # the inclusive replay of the cut slot
    got = signatures(events)
    expected = expected_transactions(server, programs, 0, 79)
    # Exactly once: nothing missing, nothing twice.
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == set(expected)
    # Each subscription keeps execution order; after a reconnect the replays of
    # different addresses may interleave, so compare per address.
    for program in programs:
        only_this = [
            tx.signature
            for slot in range(80)
            for tx in server.ledger.slot(slot).transactions
            if tx.mentions(program) and not any(tx.mentions(p) for p in programs if p != program)
        ]
        assert [sig for sig in got if sig in set(only_this)] == only_this
    assert isinstance(events[-1], Completed)


async def test_drop_longer_than_the_replay_window_reports_the_gap(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    start, end = 1_000, 1_299
    create = CreateSession(start_slot=start, end_slot=end, disconnect_timeout_secs=60)
    program = server.ledger.programs[0]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions([program])
        # Lose the data socket early in one long stride and keep it away (503 means
        # at least 5 s) while the session runs on: the replay window is long gone.
        server.faults.drop("data", after_messages=20)
        server.faults.refuse_upgrades(1, status=503, plane="data")
        events = await drive(session, stride=300)
    gaps = [e for e in events if isinstance(e, StreamGap)]
    assert len(gaps) == 1
    gap = gaps[0]
    assert gap.subscription == program
    assert gap.to_slot == end - 100  # the window keeps the last 100 executed slots
    expected = expected_transactions(server, [program], start, end)
    got = signatures(events)
    assert len(set(got)) == len(got)
    missing = set(expected) - set(got)
    slot_of = {
        tx.signature: tx.slot
        for s in range(start, end + 1)
        for tx in server.ledger.slot(s).transactions
    }
    assert missing  # the gap was real
    assert all(gap.from_slot <= slot_of[sig] <= gap.to_slot for sig in missing)
    # Outside the gap, everything arrived, in order.
    outside = [sig for sig in expected if not gap.from_slot <= slot_of[sig] <= gap.to_slot]
    assert [sig for sig in got if sig in set(outside)] == outside
    assert isinstance(events[-1], Completed)


async def test_drop_in_the_last_stride_is_recovered_before_completed(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=29, disconnect_timeout_secs=60)
    program = server.ledger.programs[1]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions([program])
        expected = expected_transactions(server, [program], 0, 29)
        # Drop near the very end and delay the reconnect past `completed`.
        server.faults.drop("data", after_messages=len(expected) - 3)
        server.faults.refuse_upgrades(1, status=500, plane="data")
        events = await drive(session, stride=30)
        stats = session.statistics()
    assert stats.reconnects["transactions[0]"] == 2  # attempts: one refused, one good
    assert signatures(events) == expected
    assert isinstance(events[-1], Completed)
    assert not any(isinstance(e, StreamGap) for e in events)


async def test_zstd_subscription_survives_a_drop(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=39, disconnect_timeout_secs=60)
    programs = server.ledger.programs[:2]
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await session.subscribe_transactions(programs, compression="zstd")
        await session.subscribe_account_diffs(programs[:1], compression="zstd")
        # A reconnect must start a fresh decompressor: the old context is gone.
        server.faults.drop("data", after_messages=40)
        events = await drive(session, stride=20)
        stats = session.statistics()
    assert sum(stats.reconnects.values()) >= 1
    got = signatures(events)
    assert len(got) == len(set(got))
    assert set(got) == set(expected_transactions(server, programs, 0, 39))
    assert diff_keys(events) == expected_diffs(server, programs[:1], 0, 39)
    assert stats.protocol_errors == 0


async def test_tail_replayed_long_after_completed_is_not_cut_short(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    # The data socket is lost in the last stride and kept away for more than
    # DRAIN_TIMEOUT after `completed`; the replay that follows must still be read
    # whole, however slowly it arrives.
    inner = server.connector()

    async def connector(nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
        conn = await inner(nursery, url, **kwargs)
        return conn if url.endswith("/backtest") else SlowReader(conn, 0.05)

    program = server.ledger.programs[1]
    expected = expected_transactions(server, [program], 0, 29)
    create = CreateSession(start_slot=0, slot_count=29, disconnect_timeout_secs=60)
    config = ClientConfig(rng=random.Random(0))
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=connector, config=config
    ) as session:
        await session.subscribe_transactions([program])
        server.faults.drop("data", after_messages=len(expected) - 40)
        server.faults.refuse_upgrades(2, status=503, plane="data")  # >= 10 s away
        events = await drive(session, stride=30)
    assert signatures(events) == expected
    assert not any(isinstance(e, StreamGap) for e in events)
    assert isinstance(events[-1], Completed)


async def test_a_flaky_but_productive_data_link_is_never_given_up(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    # client.md §3 (revised): each connection streams something new before it drops,
    # so each drop is attempt 1 again, however many there are.
    create = CreateSession(start_slot=0, slot_count=99, disconnect_timeout_secs=60)
    program = server.ledger.programs[0]
    config = ClientConfig(reconnect_max_attempts=3)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector(), config=config
    ) as session:
        handle = await session.subscribe_transactions([program])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drop_again_and_again, server, "data", handle.status, 25, 8)
            events = await drive(session, stride=5)
            nursery.cancel_scope.cancel()
    assert attempts(handle.status) == [1] * 8
    assert signatures(events) == expected_transactions(server, [program], 0, 99)
    assert not any(isinstance(e, StreamGap) for e in events)
