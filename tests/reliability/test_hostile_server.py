"""A hostile or broken server never kills the client's readers (client.md §3, §4, §5, §7).

Every test scripts one misbehaviour on a `FakeServer` and checks the documented outcome
at exact virtual times.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import orjson
import pytest
import trio
import zstandard

from tests.client.helpers import FixedRandom, until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import (
    URL,
    FakeConnection,
    Script,
    control,
    open_fake_server,
    rpc_result,
    transaction,
)
from trio_backtest import (
    HANDSHAKE_RESPONSE_TIMEOUT,
    RECONNECT_MAX_ATTEMPTS,
    RECONNECT_MAX_TOTAL,
    RECONNECT_OVERLOAD_MIN_DELAY,
    CauseKind,
    ClientConfig,
    ConnectionStatus,
    ContinueParams,
    ControlClosedError,
    ControlFailedError,
    CreateSession,
    DisconnectCause,
    Failed,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Reconnecting,
    SessionCreateError,
    Slot,
    Status,
    StreamGap,
    SubscriptionFailedError,
    Transaction,
    Up,
    open_backtest_session,
    open_parallel_session,
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
    with trio.fail_after(600):  # virtual seconds: a hang fails instead
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


async def test_a_binary_control_frame_is_read_as_utf8_json(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await conn.send_session_created()
        await conn.send_raw(orjson.dumps(control("slotNotification", 10)))
        await conn.send_raw(orjson.dumps(control("status", {"status": "bundleReadyé"})))
        await conn.send_raw(orjson.dumps(control("readyForContinue")))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        events = await until_ready(session)
        stats = session.statistics()
    assert events == [Slot(10), Status("bundleReadyé"), ReadyForContinue()]
    assert stats.protocol_errors == 0


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
    # protocol.md §7: slots and seqIds are unsigned 64-bit integers.
    {"method": "slotNotification", "params": -1},
    {"method": "slotNotification", "params": {"slot": 11}},
    {"method": "slotNotification", "params": 11.0},
    {"method": "slotNotification", "params": True},
    {"method": "slotNotification", "params": 2**63 + 2**62, "seqId": -4},
    {"method": "paused", "params": {"slot": -11, "batchIndex": None}},
    {"method": "discoveryBatch", "params": {"slot": 1.5, "batchIndex": 0, "transactions": []}},
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

    config = ClientConfig(rng=FixedRandom(1.0))  # every jitter draw at its top: x 1.2
    async with open_fake_server(script) as fake:
        with pytest.raises(SessionCreateError, match="gave up after 20 reconnect attempts") as info:
            async with open_backtest_session(
                URL, SECRET_KEY, SIMPLE, connector=fake, config=config
            ):
                pytest.fail("the create cannot succeed")  # pragma: no cover
    assert "missing key 'rpcEndpoint'" in str(info.value)
    attempts = [c.opened_at for c in fake.of("control")]
    assert len(attempts) == 1 + RECONNECT_MAX_ATTEMPTS
    # client.md §3: 0, then 0.25 s doubling up to 30 s, each x 1.2 here.
    expected = [0.0, 0.3, 0.6, 1.2, 2.4, 4.8, 9.6, 19.2] + [36.0] * 12
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


@pytest.mark.parametrize(
    ("frame", "when"),
    [
        (control("slotNotification", -5, seq=4), "replay"),
        (control("status", {"status": "bogus"}, seq=3 + 1_000_001), "replay"),
        (control("status", {"status": "bogus"}, seq=3 + 1_000_001), "live"),
    ],
    ids=["negative-slot-in-a-replay", "seq-id-jump-in-a-replay", "seq-id-jump-live"],
)
async def test_an_implausible_frame_breaks_the_connection_and_moves_no_mark(
    frame: dict[str, object], when: str, autojump_clock: trio.abc.Clock
) -> None:
    # protocol.md §7: during a handshake (the replay of a re-attach) a value that breaks
    # the protocol breaks the connection; a seqId more than 1,000,000 past the mark always
    # does — accepted, it would silence the session (every later message a duplicate).
    attached: list[int | None] = []

    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
            if when == "live":
                await conn.send(frame)
                await conn.hang()
            await conn.close(1011)
            return
        attached.append((await conn.attach())["last_sequence"])
        if conn.number == 2 and when == "replay":
            await conn.send(frame)
            await conn.hang()
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))

    connections = 2 if when == "live" else 3
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        with trio.fail_after(600):
            await session.status.wait_for(
                lambda s: isinstance(s, Up) and len(attached) == connections - 1
            )
        stats = session.statistics()
        history = session.status.history
    assert attached == [3] * (connections - 1)
    assert stats.protocol_errors == 1
    assert stats.events == {"Slot": 1, "ReadyForContinue": 1}
    assert _reconnect_causes(history)[-1].kind is CauseKind.PROTOCOL
    assert len(fake.of("control")) == connections


def _reconnect_causes(history: tuple[ConnectionStatus, ...]) -> list[DisconnectCause]:
    return [s.cause for s in history if isinstance(s, Reconnecting)]


async def test_an_oversized_frame_closes_with_1009_and_the_client_resumes(
    autojump_clock: trio.abc.Clock,
) -> None:
    sent_at: list[float] = []

    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
            await conn.expect("continue")
            await conn.send(control("slotNotification", 11, seq=4))
            sent_at.append(trio.current_time())
            await conn.send(control("status", {"status": "x" * 5000}, seq=5))
            await conn.hang()
        assert (await conn.attach())["last_sequence"] == 4
        await conn.expect("resumeAttachedSession")
        await conn.send(control("status", {"status": "bundleReady"}, seq=5))  # a smaller replay
        await conn.send(control("success"))
        await conn.send(control("readyForContinue", seq=6))

    config = ClientConfig(max_message_size=4096)
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, connector=fake, config=config) as session,
    ):
        await until_ready(session)
        events = await _continue_and_collect(session)
        history = session.status.history
    assert events == [Slot(11), Status("bundleReady"), ReadyForContinue()]
    first, second = fake.of("control")
    assert first.close_code == 1009
    assert second.opened_at == first.closed_at == sent_at[0]
    assert [c.kind for c in _reconnect_causes(history)] == [CauseKind.OVERSIZE]


async def test_an_oversized_frame_during_the_create_is_retried(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.expect("createBacktestSession")
            await conn.send(control("status", {"status": "y" * 5000}))
            await conn.hang()
        await conn.create()

    config = ClientConfig(max_message_size=4096)
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        history = session.status.history
    first, second = fake.of("control")
    assert first.close_code == 1009
    assert second.opened_at == first.opened_at
    assert [c.kind for c in _reconnect_causes(history)] == [CauseKind.OVERSIZE]


async def test_a_server_that_never_answers_times_out_the_create_exactly(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.hang()
        await conn.create()

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        history = session.status.history
    first, second = fake.of("control")
    assert [m["method"] for m in first.received] == ["createBacktestSession"]
    assert second.opened_at - first.opened_at == HANDSHAKE_RESPONSE_TIMEOUT
    (cause,) = _reconnect_causes(history)
    assert cause.kind is CauseKind.TIMEOUT
    assert cause == DisconnectCause.timeout("sessionCreated")


async def test_a_server_that_never_answers_exhausts_the_time_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = ClientConfig(rng=FixedRandom(1.0))  # every jitter draw at its top: x 1.2
    async with open_fake_server(FakeConnection.hang) as fake:
        with pytest.raises(SessionCreateError, match="s of reconnecting") as info:
            async with open_backtest_session(
                URL, SECRET_KEY, SIMPLE, connector=fake, config=config
            ):
                pytest.fail("the create cannot succeed")  # pragma: no cover
        failed_at = trio.current_time()
    assert "timed out waiting for sessionCreated" in str(info.value)
    attempts = [c.opened_at for c in fake.of("control")]
    # Each attempt waits the full 180 s handshake timeout; the window opens at the first
    # failure (180 s) and the backoffs are 0, 0.3, 0.6, 1.2 s. The failure at 902.1 s
    # is 722.1 s into the window, past the 600 s budget.
    start = attempts[0]
    assert [a - start for a in attempts] == pytest.approx([0, 180, 360.3, 540.9, 722.1], abs=1e-9)
    assert failed_at - start == pytest.approx(902.1, abs=1e-9)
    assert (HANDSHAKE_RESPONSE_TIMEOUT, RECONNECT_MAX_TOTAL) == (180, 600)


FLOOD = control("status", {"status": "preparingBundle"})


async def _flood(conn: FakeConnection, until: trio.Event | None = None) -> None:
    """Send ``status`` until ``until`` is set (or forever), one every 10 ms of virtual time."""
    while until is None or not until.is_set():
        await conn.send(FLOOD)
        await trio.sleep(0.01)


async def test_a_status_flood_before_creation_is_bounded_and_the_timeout_holds(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.expect("createBacktestSession")
            await _flood(conn)
        await conn.create()

    config = ClientConfig(event_buffer=64)
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        first, second = fake.of("control")
        # Bounded: the flood stalled once the event channel, trio-websocket's queue and
        # the stream buffer were full, long before the timeout (18,000 at 10 ms each).
        assert first.sent < 64 + 16 + 64 * 1024 // len(orjson.dumps(FLOOD)) + 8
        assert second.opened_at - first.opened_at == HANDSHAKE_RESPONSE_TIMEOUT
        events = await until_ready(session)
    # Never dropped: every status the client read is delivered, before the new session's.
    assert events[:-2] == [Status("preparingBundle")] * (len(events) - 2)
    assert len(events) - 2 >= 64
    assert events[-2:] == [Slot(10), ReadyForContinue()]


async def test_a_status_flood_after_creation_never_blocks_the_user(
    autojump_clock: trio.abc.Clock,
) -> None:
    continued_at: list[float] = []
    flooded: list[int] = []

    async def script(conn: FakeConnection) -> None:
        await conn.create()
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_flood, conn, stop)
            await conn.expect("continue")
            continued_at.append(trio.current_time())
            stop.set()
        flooded.append(conn.sent - 3)
        await conn.send(control("slotNotification", 11))
        await conn.send(control("readyForContinue"))

    config = ClientConfig(event_buffer=64)
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
        await trio.sleep(600)  # a slow user: every buffer fills, the server's writes stall
        (conn,) = fake.of("control")
        assert conn.sent < 3 + 64 + 16 + 64 * 1024 // len(orjson.dumps(FLOOD)) + 8
        stats = session.statistics()
        before = trio.current_time()
        await session.send_continue(ContinueParams(advance_count=1))
        assert trio.current_time() == before  # handed over at once, flood or not
        events = await until_ready(session)
        after = session.statistics()
    assert stats.reconnects == after.reconnects == {"control": 0}
    assert events[-2:] == [Slot(11), ReadyForContinue()]
    assert events[:-2] == [Status("preparingBundle")] * flooded[0]  # none dropped
    assert continued_at[0] >= before


async def test_a_user_can_give_up_during_a_flood_at_once(autojump_clock: trio.abc.Clock) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await _flood(conn)

    config = ClientConfig(event_buffer=64)
    async with open_fake_server(script) as fake:
        with trio.move_on_after(100) as scope:
            async with open_backtest_session(
                URL, SECRET_KEY, SIMPLE, connector=fake, config=config
            ):
                pytest.fail("the create cannot succeed")  # pragma: no cover
        assert scope.cancelled_caught
        assert trio.current_time() - fake.of("control")[0].opened_at == 100


CLOSE_CODES = [1000, 1001, 1008, 1009, 1011, 1012, 1013, 4404, 4000]
FINAL_CODES = {1008, 4404}


def _retry_delay_ok(code: int, delay: float) -> bool:
    """Attempt 1 is immediate, except after 1013 (at least the overload floor, jittered)."""
    if code == 1013:
        return RECONNECT_OVERLOAD_MIN_DELAY <= delay <= RECONNECT_OVERLOAD_MIN_DELAY * 1.2
    return delay == 0


@pytest.mark.parametrize("code", CLOSE_CODES)
async def test_close_before_creation(code: int, autojump_clock: trio.abc.Clock) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.expect("createBacktestSession")
            await conn.close(code, "scripted")
            return
        await conn.create()

    async with open_fake_server(script) as fake:
        if code in FINAL_CODES:
            with pytest.raises(SessionCreateError, match=rf"code {code}.*not retried"):
                async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake):
                    pytest.fail("a final close code must not be retried")  # pragma: no cover
            assert len(fake.of("control")) == 1
            return
        async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session:
            assert await until_ready(session) == [Slot(10), ReadyForContinue()]
            stats = session.statistics()
            history = session.status.history
    first, second = fake.of("control")
    assert first.close_code == code
    assert first.closed_at is not None
    assert _retry_delay_ok(code, second.opened_at - first.closed_at)
    assert stats.reconnects == {"control": 1}
    (cause,) = _reconnect_causes(history)
    assert cause.code == (None if code == 1009 else code)  # 1009 is classed as oversize


@pytest.mark.parametrize("code", CLOSE_CODES)
async def test_close_after_creation_of_a_non_resumable_session_is_never_retried(
    code: int, autojump_clock: trio.abc.Clock
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.create()
        await conn.close(code, "scripted")

    expected = ControlClosedError if code in (1000, 1001) else ControlFailedError
    detail = "max_message_size" if code == 1009 else f"code {code}"
    async with open_fake_server(script) as fake:
        with pytest.raises(expected, match=detail):
            async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session:
                assert await until_ready(session) == [Slot(10), ReadyForContinue()]
                await session.next_event()
        assert isinstance(session.status.value, Failed)
    assert len(fake.of("control")) == 1
    assert session.statistics().reconnects == {"control": 0}


@pytest.mark.parametrize("code", CLOSE_CODES)
async def test_close_after_creation_of_a_resumable_session(
    code: int, autojump_clock: trio.abc.Clock
) -> None:
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
            await trio.sleep(1)
            await conn.close(code, "scripted")
            return
        assert (await conn.attach())["last_sequence"] == 3
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))
        await conn.send(control("readyForContinue", seq=4))  # the fresh ready (protocol §3.1)
        await conn.expect("continue")
        await conn.send(control("slotNotification", 11, seq=5))
        await conn.send(control("readyForContinue", seq=6))

    async with open_fake_server(script) as fake:
        if code in FINAL_CODES:
            with pytest.raises(ControlFailedError, match=rf"code {code}.*not retried"):
                async with open_backtest_session(
                    URL, SECRET_KEY, RESUMABLE, connector=fake
                ) as session:
                    assert await until_ready(session) == [Slot(10), ReadyForContinue()]
                    await session.next_event()
            assert len(fake.of("control")) == 1
            return
        async with open_backtest_session(URL, SECRET_KEY, RESUMABLE, connector=fake) as session:
            assert await until_ready(session) == [Slot(10), ReadyForContinue()]
            await session.status.wait_for(lambda s: isinstance(s, Reconnecting))
            await session.status.wait_for(lambda s: isinstance(s, Up))
            # The fresh ready is a duplicate of the one the user holds: not delivered.
            assert await _continue_and_collect(session) == [Slot(11), ReadyForContinue()]
            stats = session.statistics()
    first, second = fake.of("control")
    assert first.close_code == code
    assert first.closed_at is not None
    assert _retry_delay_ok(code, second.opened_at - first.closed_at)
    assert stats.reconnects == {"control": 1}


# ---------------------------------------------------------------- the data plane

PROGRAM = "Prog1111111111111111111111111111111111111111"


def _with_data_plane(data: Script) -> Script:
    """A well-behaved control plane in front of a scripted data plane."""

    async def script(conn: FakeConnection) -> None:
        if conn.plane == "control":
            await conn.create()
        else:
            await data(conn)

    return script


async def _transactions(session: ManagedBacktestSession, count: int) -> list[str]:
    """Signatures of the next ``count`` transactions (other events are skipped)."""
    found: list[str] = []
    while len(found) < count:
        event = await session.next_event()
        if isinstance(event, Transaction):
            found.append(event.signature)
    return found


DATA_GARBAGE: list[str | bytes] = [
    "{oops",
    b"\x00\x01\x02",
    "[1]",
    '{"jsonrpc": "2.0", "method": "transactionNotification", "params": "nope"}',
    '{"jsonrpc": "2.0", "method": "transactionNotification",'
    ' "params": {"subscription": "x", "result": {}}}',
    '{"jsonrpc": "2.0", "method": "transactionNotification",'
    ' "params": {"subscription": 101, "result": {"slot": "ten"}}}',
    '{"jsonrpc": "2.0", "method": "accountDiffNotification",'
    ' "params": {"subscription": 101, "result": {"context": {}}}}',
]


async def test_garbage_on_the_data_plane_is_counted_and_the_stream_goes_on(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        assert sid == 101
        await conn.send(transaction(sid, 10, "sigA"))
        for frame in DATA_GARBAGE:
            await conn.send_raw(frame)
        await conn.send(transaction(sid, 10, "sigB"))

    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 2) == ["sigA", "sigB"]
        stats = session.statistics()
    assert stats.protocol_errors == len(DATA_GARBAGE)
    assert stats.reconnects == {"control": 0, "transactions[0]": 0}
    assert len(fake.of("data")) == 1


@pytest.mark.parametrize("frame", ["{oops", "[]", '{"jsonrpc": "2.0", "id": 1, "result": {}}x'])
async def test_garbage_before_the_subscribe_ack_is_a_broken_connection(
    frame: str, autojump_clock: trio.abc.Clock
) -> None:
    async def data(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.receive()
            await conn.send_raw(frame)
            await conn.hang()
        (sid,) = (await conn.ack_subscriptions(1)).values()
        await conn.send(transaction(sid, 10, "sigA"))

    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 1) == ["sigA"]
        stats = session.statistics()
    first, second = fake.of("data")
    assert second.opened_at == first.opened_at  # attempt 1 is immediate
    assert stats.protocol_errors == 1
    assert stats.reconnects == {"control": 0, "transactions[0]": 1}
    assert [c.kind for c in _reconnect_causes(handle.status.history)] == [CauseKind.PROTOCOL]


async def test_acks_for_unknown_ids_are_ignored(autojump_clock: trio.abc.Clock) -> None:
    async def data(conn: FakeConnection) -> None:
        request = await conn.receive()
        await conn.send(rpc_result(request["id"] + 100, 7))
        await conn.send(rpc_result("not-an-id", 8))
        await conn.send(rpc_result(request["id"], 9))
        await conn.send(rpc_result(request["id"], 10))  # answered twice
        await conn.send(transaction(9, 10, "sigA"))
        await conn.send(transaction(10, 10, "sigB"))  # the second answer created nothing
        await conn.send(transaction(9, 10, "sigC"))

    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 2) == ["sigA", "sigC"]
        stats = session.statistics()
    assert stats.unknown_messages == 4
    assert stats.protocol_errors == 0
    assert stats.reconnects == {"control": 0, "transactions[0]": 0}
    assert len(fake.of("data")) == 1


async def test_a_notification_for_an_unknown_subscription_is_not_delivered(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        await conn.send(transaction(sid + 999, 10, "ghost"))
        await conn.send(transaction(sid, 10, "real"))

    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 1) == ["real"]
        stats = session.statistics()
    assert stats.unknown_messages == 1
    assert stats.events.get("Transaction") == 1
    assert len(fake.of("data")) == 1


def _rpc_error(
    request_id: object, code: int, message: str, data: object = None
) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


@pytest.mark.parametrize(
    ("code", "data"),
    [(-32602, None), (-32601, None), (-32603, {"why": "busy"}), (-32010, None)],
)
async def test_a_subscribe_error_is_retried_per_the_policy(
    code: int, data: object, autojump_clock: trio.abc.Clock
) -> None:
    # client.md §3 lists every final cause; a JSON-RPC error (and a -32010 without its
    # oldestSlot) is not among them, so the subscription reconnects and subscribes again.
    async def data_plane(conn: FakeConnection) -> None:
        if conn.number == 1:
            request = await conn.receive()
            await conn.send(_rpc_error(request["id"], code, "scripted refusal", data))
            await conn.hang()
        (sid,) = (await conn.ack_subscriptions(1)).values()
        await conn.send(transaction(sid, 10, "sigA"))

    async with (
        open_fake_server(_with_data_plane(data_plane)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 1) == ["sigA"]
    first, second = fake.of("data")
    assert second.opened_at == first.opened_at
    (cause,) = _reconnect_causes(handle.status.history)
    assert cause.kind is CauseKind.SUBSCRIBE_REJECTED
    assert cause.code == code


async def test_a_subscribe_refused_every_time_fails_after_the_budget(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def data_plane(conn: FakeConnection) -> None:
        request = await conn.receive()
        await conn.send(_rpc_error(request["id"], -32602, "invalid params"))
        await conn.hang()

    async with (
        open_fake_server(_with_data_plane(data_plane)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        with pytest.raises(SubscriptionFailedError, match=r"gave up after 20.*-32602"):
            await session.subscribe_transactions([PROGRAM])
        assert session.subscriptions == ()
        # The session itself is unharmed.
        assert await until_ready(session) == [Slot(10), ReadyForContinue()]
    assert len(fake.of("data")) == 1 + RECONNECT_MAX_ATTEMPTS


async def test_an_oversized_notification_closes_with_1009_and_the_stream_is_replayed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        if conn.number == 1:
            await conn.send(transaction(sid, 10, "sigA"))
            await conn.send(transaction(sid, 11, "x" * 5000))
            await conn.hang()
        await conn.send(transaction(sid, 10, "sigA"))  # the inclusive replay
        await conn.send(transaction(sid, 11, "sigB"))

    config = ClientConfig(max_message_size=4096)
    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM])
        assert await _transactions(session, 2) == ["sigA", "sigB"]
        stats = session.statistics()
    first, second = fake.of("data")
    assert first.close_code == 1009
    assert second.opened_at == first.closed_at
    assert second.received[0]["params"][1]["replayFromSlot"] == 10
    assert stats.duplicates_dropped == 1
    assert [c.kind for c in _reconnect_causes(handle.status.history)] == [CauseKind.OVERSIZE]


async def test_a_zstd_frame_that_inflates_past_the_limit_is_an_oversized_frame(
    autojump_clock: trio.abc.Clock,
) -> None:
    # protocol.md §7: decompression is bounded by max_message_size; a frame beyond it is
    # an oversized frame (close 1009, reconnect), however small it was compressed.
    limit = 1024 * 1024
    bomb = orjson.dumps(transaction(101, 11, "sigB")) + b" " * (8 * limit)  # valid JSON
    compressed: list[int] = []

    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        compressor = zstandard.ZstdCompressor().compressobj()

        async def send(payload: bytes) -> None:
            frame = compressor.compress(payload) + compressor.flush(
                zstandard.COMPRESSOBJ_FLUSH_BLOCK
            )
            compressed.append(len(frame))
            await conn.send_raw(frame)

        await send(orjson.dumps(transaction(sid, 10, "sigA")))
        if conn.number == 1:
            await send(bomb)
            await conn.hang()
        await send(orjson.dumps(transaction(sid, 11, "sigB")))

    config = ClientConfig(max_message_size=limit)
    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM], compression="zstd")
        assert await _transactions(session, 2) == ["sigA", "sigB"]
        stats = session.statistics()
    assert compressed[1] < 4096 < limit  # tiny on the wire
    first, second = fake.of("data")
    assert first.close_code == 1009
    assert second.received[0]["params"][1]["replayFromSlot"] == 10
    assert [c.kind for c in _reconnect_causes(handle.status.history)] == [CauseKind.OVERSIZE]
    assert stats.protocol_errors == 0


def _window_exceeded(request: dict[str, Any], oldest: int) -> dict[str, object]:
    return _rpc_error(request["id"], -32010, "replay window exceeded", {"oldestSlot": oldest})


def _replay_from(request: dict[str, Any]) -> int | None:
    value: int | None = request["params"][1].get("replayFromSlot")
    return value


async def test_a_replay_that_begins_far_beyond_the_session_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A replay whose first notification names a slot far beyond the session's end moved
    # the cursor there; the next replay asked from that slot and a transaction was lost
    # without a StreamGap. A slot outside the session is a protocol error: dropped,
    # counted, and it moves no cursor.
    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        if conn.number == 1:
            await conn.send(transaction(sid, 10, "s1"))
        elif conn.number == 2:
            await conn.send(transaction(sid, 10**12, "bogus"))
            await conn.send(transaction(sid, 11, "s2"))
        else:
            replay_from = _replay_from(conn.received[0])
            for slot, signature in ((10, "s1"), (11, "s2"), (12, "s3")):
                if replay_from is not None and slot >= replay_from:
                    await conn.send(transaction(sid, slot, signature))
            await conn.send(transaction(sid, 13, "s4"))
            return
        await conn.close(1011)

    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        await session.subscribe_transactions([PROGRAM])
        with trio.fail_after(600):
            assert await _transactions(session, 4) == ["s1", "s2", "s3", "s4"]
        stats = session.statistics()
    assert stats.protocol_errors == 1
    assert [_replay_from(c.received[0]) for c in fake.of("data")] == [10, 10, 11]


async def test_a_replay_window_error_beyond_the_session_is_a_protocol_error_not_a_gap(
    autojump_clock: trio.abc.Clock,
) -> None:
    # protocol.md §7: an oldestSlot beyond the session's end is a protocol error, never
    # a StreamGap; refusals back off through the policy instead of a tight loop.
    subscribes: list[float] = []

    async def data(conn: FakeConnection) -> None:
        while len(subscribes) < 50:  # a tight loop would get this far
            request = await conn.expect("transactionSubscribe")
            subscribes.append(trio.current_time())
            if conn.number == 1:
                await conn.send(rpc_result(request["id"], 101))
                await conn.send(transaction(101, 10, "s1"))
                await conn.close(1011)
                return
            await conn.send(_window_exceeded(request, 10**6))

    config = ClientConfig(reconnect_max_attempts=4, reconnect_jitter=0.0)
    events: list[ManagedEvent] = []
    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM])
        with pytest.raises(SubscriptionFailedError, match="gave up after 4"), trio.fail_after(600):
            while True:
                events.append(await session.next_event())
        stats = session.statistics()
    assert not [e for e in events if isinstance(e, StreamGap)]
    assert len(subscribes) == len(fake.of("data")) == 1 + 4
    # client.md §3, jitter off: attempt 1 at once, then 0.25 s doubling.
    waits = [b - a for a, b in itertools.pairwise(subscribes)]
    assert waits == pytest.approx([0.0, 0.25, 0.5, 1.0], abs=1e-9)
    assert stats.protocol_errors == 4
    kinds = [c.kind for c in _reconnect_causes(handle.status.history)]
    assert kinds == [CauseKind.CLOSED] + [CauseKind.PROTOCOL] * 3


async def test_one_continuous_loss_is_one_stream_gap_however_often_the_window_moves(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The server executes on while the subscription is down: each refusal offers a later
    # oldest slot. The loss is one StreamGap, delivered when the subscription is back.
    refusals = 0

    async def data(conn: FakeConnection) -> None:
        nonlocal refusals
        if conn.number == 1:
            (sid,) = (await conn.ack_subscriptions(1)).values()
            await conn.send(transaction(sid, 10, "s1"))
            await conn.close(1011)
            return
        while True:
            request = await conn.expect("transactionSubscribe")
            oldest = 13 + 3 * min(refusals, 2)  # moves twice, then the stride is over
            replay_from = _replay_from(request)
            if refusals >= 3 and replay_from is not None and replay_from >= oldest:
                await conn.send(rpc_result(request["id"], 200))
                await conn.send(transaction(200, oldest, "s19"))
                return
            refusals += 1
            await conn.send(_window_exceeded(request, oldest))

    create = CreateSession(start_slot=10, slot_count=30)
    async with (
        open_fake_server(_with_data_plane(data)) as fake,
        open_backtest_session(URL, SECRET_KEY, create, connector=fake) as session,
    ):
        handle = await session.subscribe_transactions([PROGRAM])
        with trio.fail_after(600):
            events = [await session.next_event() for _ in range(5)]
        stats = session.statistics()
    delivered = [e for e in events if isinstance(e, Transaction | StreamGap)]
    assert [getattr(e, "signature", e) for e in delivered] == [
        "s1",
        StreamGap(PROGRAM, 10, 18),
        "s19",
    ]
    assert stats.gaps == 1
    causes = _reconnect_causes(handle.status.history)
    assert [(c.kind, c.code) for c in causes] == [
        (CauseKind.CLOSED, 1011),
        (CauseKind.SUBSCRIBE_REJECTED, -32010),
    ]
    assert len(fake.of("data")) == 3


async def test_data_plane_4404_is_final(autojump_clock: trio.abc.Clock) -> None:
    async def data(conn: FakeConnection) -> None:
        (sid,) = (await conn.ack_subscriptions(1)).values()
        await conn.send(transaction(sid, 10, "sigA"))
        await conn.close(4404, "session not found")

    async with open_fake_server(_with_data_plane(data)) as fake:
        with pytest.raises(SubscriptionFailedError, match="4404"):
            async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session:
                await session.subscribe_transactions([PROGRAM])
                while True:
                    await session.next_event()
    assert len(fake.of("data")) == 1
    assert session.statistics().events.get("Transaction") == 1


@pytest.mark.parametrize(
    ("error", "final"),
    [
        ({"InvalidRequest": {"error": "startSlot after endSlot"}}, True),
        ({"Internal": {"error": "clerk restarting"}}, False),
        ({"ClerkError": {"error": "no capacity"}}, False),
        ("SomethingNewV7", False),
    ],
)
async def test_an_error_answer_to_the_create(
    error: object, final: bool, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # client.md §3: of the errors a create can get, only InvalidRequest is final.
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.expect("createBacktestSession")
            await conn.send(control("error", error))
            await conn.hang()
        await conn.create()

    async with open_fake_server(script) as fake:
        if final:
            with pytest.raises(SessionCreateError, match="startSlot after endSlot"):
                async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake):
                    pytest.fail("an InvalidRequest answer is final")  # pragma: no cover
            assert len(fake.of("control")) == 1
            failed = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert failed  # published Failed(reason) and logged it
            return
        async with open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session:
            assert await until_ready(session) == [Slot(10), ReadyForContinue()]
            history = session.status.history
    first, second = fake.of("control")
    assert second.opened_at == first.opened_at
    (cause,) = _reconnect_causes(history)
    assert cause.kind is CauseKind.SERVER_ERROR


# ---------------------------------------------------------------- rpcEndpoint

SECURE_URL = "wss://localhost:9/backtest"


@pytest.mark.parametrize("parallel", [False, True], ids=["single", "parallel"])
@pytest.mark.parametrize(
    "endpoint",
    ["ftp://localhost:9/backtest/s", "ws://localhost:9/backtest/s", "javascript:alert(1)"],
)
async def test_an_unusable_rpc_endpoint_fails_the_create_at_once(
    endpoint: str, parallel: bool, autojump_clock: trio.abc.Clock
) -> None:
    # Only ws/wss/http/https, and no plain ws:// data plane under a wss:// control URL.
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await conn.send(control("sessionCreated", {"sessionId": "s", "rpcEndpoint": endpoint}))
        await conn.hang()

    opener = open_parallel_session if parallel else open_backtest_session
    async with open_fake_server(script) as fake:
        with pytest.raises(SessionCreateError, match="rpcEndpoint is unusable"):
            async with opener(SECURE_URL, SECRET_KEY, RESUMABLE, connector=fake):
                pytest.fail("the create cannot succeed")  # pragma: no cover
    assert len(fake.of("control")) == 1  # not retried


async def test_credentials_in_the_rpc_endpoint_are_dropped(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        rpc = "wss://user:hunter2@localhost:9/backtest/a/../s"
        await conn.send(control("sessionCreated", {"sessionId": "s", "rpcEndpoint": rpc}))
        await conn.send(control("slotNotification", 10))
        await conn.send(control("readyForContinue"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(SECURE_URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        await until_ready(session)
        texts = [repr(session.info), repr(session), str(session.info.rpc_endpoint)]
    assert session.info.rpc_endpoint == "wss://localhost:9/backtest/s"
    texts += [record.getMessage() for record in caplog.records]
    assert not [text for text in texts if "hunter2" in text]
