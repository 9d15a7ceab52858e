"""'Seen' means "handed over": an event whose hand-over to the user is cancelled comes again.

Each test makes a manager block while handing an event to a full channel (a one-slot
event buffer and a user who does not read yet). Then something cancels that hand-over —
a sibling's continue on a dead control socket, a failed continue of the session itself —
or the user stays slow through what used to cancel it (a reconnect's handshake timeout,
the drain after ``Completed``), and the user must still receive every event exactly once.
Each test failed against the code before "seen" became a commit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from tests.client.helpers import until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import (
    URL,
    FakeConnection,
    control,
    open_fake_server,
    rpc_result,
    transaction,
)
from trio_backtest import (
    ClientConfig,
    Completed,
    ContinueParams,
    CreateSession,
    ManagedBacktestSession,
    ManagedEvent,
    ParallelSubSession,
    ReadyForContinue,
    Slot,
    Status,
    StreamGap,
    Transaction,
    open_backtest_session,
    open_parallel_session,
)
from trio_backtest.server import open_local_server

#: Every hand-over after the first waits for the user.
ONE_SLOT = ClientConfig(event_buffer=1, handshake_response_timeout=5.0)
RESUMABLE = CreateSession(start_slot=10, slot_count=5, disconnect_timeout_secs=60)
PROGRAM_A = "ProgA111111111111111111111111111111111111111"
PROGRAM_B = "ProgB111111111111111111111111111111111111111"


async def _run_to_completion(session: ManagedBacktestSession, events: list[ManagedEvent]) -> None:
    """Continue one slot at a time until `Completed`, collecting every event."""
    while not isinstance(events[-1], Completed):
        if isinstance(events[-1], ReadyForContinue):
            await session.send_continue(ContinueParams(advance_count=1))
        events.append(await session.next_event())


@pytest.mark.parametrize("advance", [1, 3], ids=["ready", "slot"])
async def test_a_sub_session_event_cut_off_by_a_siblings_continue_comes_again(
    advance: int, autojump_clock: trio.abc.Clock
) -> None:
    # The batch's reader blocks handing sub-session A's answer to A's full channel; the
    # control socket is lost; B's continue goes out on it, fails, and cancels the reader.
    async with open_local_server(
        api_keys=(SECRET_KEY,), tcp=False, seed=7, bundle_size=10, transactions_per_slot=2.0
    ) as server:
        create = CreateSession(start_slot=0, end_slot=19, disconnect_timeout_secs=60)
        async with open_parallel_session(
            server.url, SECRET_KEY, create, config=ONE_SLOT, connector=server.connector()
        ) as batch:
            a, b = batch.sub_sessions
            runs: dict[ParallelSubSession, list[ManagedEvent]] = {}

            async def first_ready(sub: ParallelSubSession) -> None:
                runs[sub] = await until_ready(sub)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(first_ready, a)
                nursery.start_soon(first_ready, b)
            await a.send_continue(ContinueParams(advance_count=advance))
            await trio.sleep(1)  # A's answer: one event in A's channel, the next one held
            server.faults.drop("control")
            await b.send_continue(ContinueParams(advance_count=1))
            await trio.sleep(1)  # it fails on the dead socket before A's user reads again
            with trio.fail_after(600):
                async with trio.open_nursery() as nursery:
                    for sub in (a, b):
                        runs[sub].append(await sub.next_event())
                        nursery.start_soon(_run_to_completion, sub, runs[sub])
            stats = batch.statistics()
    assert stats.control_reconnects == 1
    for sub in (a, b):
        assert sub.range is not None
        start, end = sub.range
        assert [e.slot for e in runs[sub] if isinstance(e, Slot)] == list(range(start, end + 1))
        assert server.executed_slots(sub.info.session_id) == list(range(start, end + 1))


async def test_a_control_event_cut_off_by_a_failed_continue_comes_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Statuses arrive after the ready; the reader holds the second one for the full
    # channel when the user's continue finds the socket closed.
    attached: list[dict[str, Any]] = []
    log = [
        control("status", {"status": "a"}, seq=4),
        control("status", {"status": "b"}, seq=5),
        control("status", {"status": "c"}, seq=6),
    ]

    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
            for message in log:
                await conn.send(message)
            await conn.close(1011)
            return
        attached.append(await conn.attach())
        for message in log:
            if message["seqId"] > attached[-1]["last_sequence"]:
                await conn.send(message)
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))
        await conn.send(control("readyForContinue", seq=7))  # the continue never arrived

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, config=ONE_SLOT, connector=fake) as s,
    ):
        assert await until_ready(s) == [Slot(10), ReadyForContinue()]
        await trio.sleep(1)  # "a" waits in the channel, "b" in the reader's hand-over
        await s.send_continue(ContinueParams(advance_count=1))
        await trio.sleep(1)  # it fails on the closed socket before the user reads again
        with trio.fail_after(60):
            events = await until_ready(s)
    assert events == [Status("a"), Status("b"), Status("c"), ReadyForContinue()]
    assert [a["last_sequence"] for a in attached] == [4]
    assert len(fake.of("control")) == 2


async def _slowly(session: ManagedBacktestSession, count: int) -> list[ManagedEvent]:
    """``count`` events, taking 10 s over each: longer than the 5 s handshake timeout."""
    events: list[ManagedEvent] = []
    with trio.fail_after(600):
        for _ in range(count):
            await trio.sleep(10)
            events.append(await session.next_event())
    return events


async def test_a_ready_held_back_in_a_replay_reaches_a_slow_user_at_the_resume(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A continue is lost in a drop; the replay holds an old fresh ready, delivered at the
    # resume. That hand-over waits for a slow user: the resume's timeout must not cut it
    # off (it did, and the ready was recorded as delivered: the run hung).
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await conn.create(seq=iter([1, 2, 3]))
            await conn.expect("continue")
            await conn.close(1011)  # lost: never executed
            return
        await conn.attach()
        await conn.send(control("status", {"status": "x"}, seq=4))
        await conn.send(control("readyForContinue", seq=5))
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, config=ONE_SLOT, connector=fake) as s,
    ):
        await until_ready(s)
        await s.send_continue(ContinueParams(advance_count=1))
        events = await _slowly(s, 2)
    assert events == [Status("x"), ReadyForContinue()]
    assert len(fake.of("control")) == 2


async def _subscribes(conn: FakeConnection, count: int) -> list[dict[str, Any]]:
    return [await conn.expect("transactionSubscribe") for _ in range(count)]


def _notifications(events: list[ManagedEvent]) -> list[object]:
    return [
        e.signature if isinstance(e, Transaction) else e
        for e in events
        if isinstance(e, Transaction | StreamGap)
    ]


async def _first_data_connection(conn: FakeConnection, requests: list[dict[str, Any]]) -> None:
    """Acknowledge every subscribe, send one notification (``s1``, slot 10), drop."""
    for offset, request in enumerate(requests):
        await conn.send(rpc_result(request["id"], 101 + offset))
    await conn.send(transaction(101, 10, "s1"))
    await conn.close(1011)


LaterConnection = Callable[[FakeConnection, list[dict[str, Any]]], Awaitable[None]]


async def _through_a_failed_reconnect(
    later: LaterConnection, programs: list[str], count: int
) -> list[ManagedEvent]:
    """Subscribe to ``programs``; read ``count`` events slowly (see `_slowly`).

    The first data connection is `_first_data_connection`; ``later`` serves the others,
    given the subscribe requests it received.
    """

    async def script(conn: FakeConnection) -> None:
        if conn.plane == "control":
            await conn.create()
            return
        requests = await _subscribes(conn, len(programs))
        if conn.number == 1:
            await _first_data_connection(conn, requests)
            return
        await later(conn, requests)

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, config=ONE_SLOT, connector=fake) as s,
    ):
        await until_ready(s)
        await s.subscribe_transactions(programs)
        events = await _slowly(s, count)
    assert len(fake.of("data")) == 3
    return events


async def test_a_replay_handed_to_a_slow_user_during_a_resubscribe_loses_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    # A reconnect's replay of A is handed over while B's acknowledgement is still due;
    # the user is slow. The handshake timeout cut that hand-over off and the notification
    # was recorded as delivered; now the wait for the user does not count, and when B's
    # acknowledgement never comes the replay on the next connection is complete.
    async def later(conn: FakeConnection, requests: list[dict[str, Any]]) -> None:
        a_id, b_id = (request["id"] for request in requests)
        await conn.send(rpc_result(a_id, 201))
        if conn.number == 2:
            for signature in ("s1", "s2", "s3"):
                await conn.send(transaction(201, 10, signature))
            await conn.hang()  # B is never acknowledged
        await conn.send(rpc_result(b_id, 202))
        for signature in ("s1", "s2", "s3"):
            await conn.send(transaction(201, 10, signature))
        await conn.send(transaction(201, 11, "s4"))

    events = await _through_a_failed_reconnect(later, [PROGRAM_A, PROGRAM_B], 4)
    assert _notifications(events) == ["s1", "s2", "s3", "s4"]


async def test_a_stream_gap_for_a_slow_user_is_reported_however_the_connection_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The replay window no longer reaches the cursor; the resubscribe is never answered.
    # The gap was handed over at the refusal (to a full channel), the cursor already past
    # it, and the handshake timeout cut the hand-over off: a silent loss.
    async def later(conn: FakeConnection, requests: list[dict[str, Any]]) -> None:
        (request,) = requests
        replay_from = request["params"][1].get("replayFromSlot")
        if replay_from is not None and replay_from < 13:
            error = {
                "code": -32010,
                "message": "replay window exceeded",
                "data": {"oldestSlot": 13},
            }
            await conn.send({"jsonrpc": "2.0", "id": request["id"], "error": error})
            if conn.number == 2:
                await conn.hang()  # the resubscribe is never answered
            (request,) = await _subscribes(conn, 1)
        await conn.send(rpc_result(request["id"], 300 + conn.number))
        await conn.send(transaction(300 + conn.number, 13, "s4"))

    events = await _through_a_failed_reconnect(later, [PROGRAM_A], 3)
    assert _notifications(events) == ["s1", StreamGap(PROGRAM_A, 10, 12), "s4"]


async def test_a_slow_user_after_completed_loses_no_notification(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The server never closes the data socket; the drain must not count the time the
    # user takes as quiet on the socket, nor cut off a hand-over in progress.
    signatures = [f"s{n}" for n in range(6)]

    async def script(conn: FakeConnection) -> None:
        if conn.plane == "control":
            await conn.create()
            await conn.expect("continue")
            await conn.send(control("completed", {"summary": None, "agentStats": None}))
            return
        (request,) = await _subscribes(conn, 1)
        await conn.send(rpc_result(request["id"], 101))
        for signature in signatures:
            await conn.send(transaction(101, 10, signature))

    config = ClientConfig(event_buffer=1)
    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, RESUMABLE, config=config, connector=fake) as s,
    ):
        await until_ready(s)
        await s.subscribe_transactions([PROGRAM_A])
        await s.send_continue(ContinueParams(advance_count=1))
        events: list[ManagedEvent] = []
        with trio.fail_after(600):
            async for event in s.events():
                events.append(event)
                await trio.sleep(30)  # a user busy with each event for longer than the drain
    assert _notifications(events) == signatures
    assert isinstance(events[-1], Completed)
    assert len(fake.of("data")) == 1
