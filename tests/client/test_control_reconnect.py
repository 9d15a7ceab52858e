"""Control drops: attach + resume, exactly-once control events, readiness across drops."""

from __future__ import annotations

import pytest
import trio

from tests.client.helpers import (
    attempts,
    drive,
    drop_again_and_again,
    expected_transactions,
    signatures,
    until_ready,
)
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import URL, FakeConnection, control, open_fake_server
from trio_backtest import (
    ClientConfig,
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


async def test_a_flaky_but_productive_control_link_is_never_given_up(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    # client.md §3 (revised): every connection moves the session forward before it
    # drops, so every drop is attempt 1 again — far more drops than the budget allows.
    create = CreateSession(start_slot=0, slot_count=99, disconnect_timeout_secs=60)
    config = ClientConfig(reconnect_max_attempts=3)
    async with (
        open_backtest_session(
            server.url, SECRET_KEY, create, connector=server.connector(), config=config
        ) as session,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(drop_again_and_again, server, "control", session.status, 10, 8)
        events = await drive(session, stride=2)
        nursery.cancel_scope.cancel()
    assert attempts(session.status) == [1] * 8
    assert [e.slot for e in events if isinstance(e, Slot)] == list(range(100))
    assert isinstance(events[-1], Completed)


async def test_reconnects_that_bring_nothing_new_still_back_off_in_full(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A server that attaches, resumes and drops at once: each reconnect is Up, but brings
    # nothing new, so the attempts climb the whole backoff and the budget runs out.
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
        else:
            await conn.attach()
            await conn.expect("resumeAttachedSession")
            await conn.send(control("success"))
        await conn.close(1011)

    config = ClientConfig(reconnect_max_attempts=6, reconnect_jitter=0.0)
    create = CreateSession(start_slot=10, slot_count=5, disconnect_timeout_secs=60)
    async with open_fake_server(script) as fake:
        with pytest.raises(ControlFailedError, match="gave up after 6 reconnect attempts"):
            async with open_backtest_session(
                URL, SECRET_KEY, create, connector=fake, config=config
            ) as session:
                await until_ready(session)
                await session.next_event()
    opened = [c.opened_at for c in fake.of("control")]
    closed = [c.closed_at for c in fake.of("control")]
    waits = [b - a for a, b in zip(closed, opened[1:], strict=False)]
    # client.md §3: attempt 1 at once, then 0.25 s doubling (jitter off).
    assert waits == pytest.approx([0.0, 0.25, 0.5, 1.0, 2.0, 4.0], abs=1e-9)
    assert attempts(session.status) == [1, 2, 3, 4, 5, 6]
