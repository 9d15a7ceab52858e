"""A hostile or broken server never kills the client's readers (client.md §3, §4, §5, §7).

Every test scripts one misbehaviour on a `FakeServer` and checks the documented outcome
at exact virtual times.
"""

from __future__ import annotations

import itertools
import logging
import random

import pytest
import trio

from tests.client.helpers import until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import URL, FakeConnection, control, open_fake_server
from trio_backtest import (
    RECONNECT_MAX_ATTEMPTS,
    CauseKind,
    ClientConfig,
    ContinueParams,
    CreateSession,
    DisconnectCause,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Reconnecting,
    ReconnectPolicy,
    SessionCreateError,
    Slot,
    open_backtest_session,
)

SIMPLE = CreateSession(start_slot=10, slot_count=5)
RESUMABLE = CreateSession(start_slot=10, slot_count=5, disconnect_timeout_secs=60)


async def test_unknown_method_is_counted_not_delivered_and_the_session_goes_on(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await conn.send_session_created()
        await conn.send(control("quantumEntanglementV9", {"spin": "up"}))
        await conn.send(control("slotNotification", 10))
        await conn.send(control("readyForContinue"))
        await conn.expect("continue")
        await conn.send(control("fancyNotice"))
        await conn.send(control("slotNotification", 11))
        await conn.send(control("readyForContinue"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        assert await session.next_event() == Slot(10)
        assert await session.next_event() == ReadyForContinue()
        await session.send_continue(ContinueParams(advance_count=1))
        assert await session.next_event() == Slot(11)
        assert await session.next_event() == ReadyForContinue()
        stats = session.statistics()
    assert stats.unknown_messages == 2
    assert stats.protocol_errors == 0
    assert stats.reconnects == {"control": 0}
    assert stats.events == {"Slot": 2, "ReadyForContinue": 2}
    assert len(fake.of("control")) == 1
    assert any("quantumEntanglementV9" in r.getMessage() for r in caplog.records)


async def _continue_and_collect(session: ManagedBacktestSession) -> list[ManagedEvent]:
    await session.send_continue(ContinueParams(advance_count=1))
    return await until_ready(session)


async def test_frames_that_are_not_json_are_counted_and_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.create()
        await conn.send_raw("this is {not json")
        await conn.send_raw(b"\xff\xfe binary garbage")
        await conn.send_raw("")
        await conn.expect("continue")
        await conn.send(control("slotNotification", 11))
        await conn.send(control("readyForContinue"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        assert await _continue_and_collect(session) == [Slot(11), ReadyForContinue()]
        stats = session.statistics()
    assert stats.protocol_errors == 3
    assert stats.reconnects == {"control": 0}
    assert len(fake.of("control")) == 1


WRONG_TYPES: list[object] = [
    [1, 2, 3],
    "just a string",
    {"params": {}},
    {"method": 42},
    {"method": "slotNotification", "params": "eleven"},
    {"method": "slotNotification", "params": 11, "seqId": "7"},
    {"method": "paused", "params": {"slot": "x", "batchIndex": 0}},
    {"method": "status", "params": {"status": 5}},
    {"method": "completed", "params": 3},
    {"method": "error", "params": 17},
]


async def test_frames_with_wrong_types_are_counted_and_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.create()
        for frame in WRONG_TYPES:
            await conn.send(frame)
        await conn.expect("continue")
        await conn.send(control("slotNotification", 11))
        await conn.send(control("readyForContinue"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        assert await _continue_and_collect(session) == [Slot(11), ReadyForContinue()]
        stats = session.statistics()
    assert stats.protocol_errors == len(WRONG_TYPES)
    assert stats.unknown_messages == 0
    assert stats.reconnects == {"control": 0}
    assert len(fake.of("control")) == 1


HANDSHAKE_BREAKERS: list[str] = [
    "{not json",
    "[]",
    '{"method": "sessionCreated", "params": {"sessionId": "x"}}',
    '{"method": "sessionCreated", "params": {"rpcEndpoint": "/backtest/x"}}',
    '{"method": "sessionCreated", "params": {"sessionId": 5, "rpcEndpoint": "/backtest/x"}}',
    '{"method": "sessionCreated"}',
]


@pytest.mark.parametrize("frame", HANDSHAKE_BREAKERS)
async def test_a_broken_frame_during_the_create_is_a_broken_connection(
    frame: str, autojump_clock: trio.abc.Clock
) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.expect("createBacktestSession")
            await conn.send_raw(frame)
            await conn.hang()
        await conn.create()

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        stats = session.statistics()
        history = session.status.history
    first, second = fake.of("control")
    assert second.opened_at == first.opened_at  # attempt 1 is immediate
    assert stats.protocol_errors == 1
    assert stats.reconnects == {"control": 1}
    reconnecting = [s for s in history if isinstance(s, Reconnecting)]
    assert len(reconnecting) == 1
    assert reconnecting[0].attempt == 1
    assert reconnecting[0].cause.kind is CauseKind.PROTOCOL


async def test_session_created_missing_keys_retries_until_the_budget_is_spent(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await conn.send(control("sessionCreated", {"sessionId": f"s{conn.number}"}))
        await conn.hang()

    config = ClientConfig(rng=random.Random(11))
    async with open_fake_server(script) as fake:
        with pytest.raises(SessionCreateError, match="gave up after 20 reconnect attempts") as info:
            async with open_backtest_session(
                URL, SECRET_KEY, SIMPLE, connector=fake, config=config
            ):
                pytest.fail("the create cannot succeed")  # pragma: no cover
    assert "rpcEndpoint" in str(info.value) or "rpc_endpoint" in str(info.value)
    attempts = [c.opened_at for c in fake.of("control")]
    assert len(attempts) == 1 + RECONNECT_MAX_ATTEMPTS
    policy, rng = ReconnectPolicy(ClientConfig()), random.Random(11)
    cause = DisconnectCause.protocol("")
    expected = [policy.delay(n, cause, rng) for n in range(1, RECONNECT_MAX_ATTEMPTS + 1)]
    assert [b - a for a, b in itertools.pairwise(attempts)] == pytest.approx(expected, abs=1e-9)


async def test_seq_id_going_back_is_dropped_and_a_jump_is_accepted_and_logged(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    attach: dict[str, object] = {}

    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))  # sessionCreated, slot 10, ready
            await conn.expect("continue")
            await conn.send(control("slotNotification", 11, seq=4))
            await conn.send(control("slotNotification", 11, seq=4))  # repeated
            await conn.send(control("slotNotification", 10, seq=2))  # backwards
            await conn.send(control("status", {"status": "bundleReady"}, seq=1))  # backwards
            await conn.send(control("slotNotification", 12, seq=9))  # 5..8 skipped
            await conn.send(control("readyForContinue", seq=10))
            await conn.expect("continue")
            await conn.close(1011)
            return
        attach.update(await conn.attach())
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))
        await conn.send(control("readyForContinue"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        assert await _continue_and_collect(session) == [Slot(11), Slot(12), ReadyForContinue()]
        stats = session.statistics()
        assert await _continue_and_collect(session) == [ReadyForContinue()]  # lost in the drop
    assert stats.duplicates_dropped == 3
    assert stats.events == {"Slot": 3, "ReadyForContinue": 2}
    assert attach == {"session_id": "fake-session", "last_sequence": 10}
    assert len(fake.of("control")) == 2
    jumps = [r for r in caplog.records if "seqId" in r.getMessage() and "9" in r.getMessage()]
    assert len(jumps) == 1
    assert jumps[0].levelno == logging.WARNING
