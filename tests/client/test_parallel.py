"""Parallel batches: concurrent sub-sessions over one multiplexed control connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio

from tests.client.helpers import drive, expected_transactions, signatures, until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import (
    URL,
    FakeConnection,
    FakeServer,
    Script,
    control,
    open_fake_server,
)
from trio_backtest import (
    CauseKind,
    Completed,
    ContinueParams,
    ControlClosedError,
    ControlFailedError,
    CreateSession,
    Failed,
    ManagedEvent,
    ManagedParallelSession,
    ParallelSubSession,
    Paused,
    Reconnecting,
    ServerError,
    Slot,
    Status,
    open_backtest_session,
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


# ---------------------------------------------------------------- a scripted batch


def _event(session_id: str, seq: int, method: str, params: Any = None) -> dict[str, Any]:
    event = control(method) if params is None else control(method, params)
    return control("sessionEventV2", {"sessionId": session_id, "seqId": seq, "event": event})


async def _create_batch(conn: FakeConnection) -> None:
    """Sub-sessions ``a`` (slots 10..19) and ``b`` (20..29), each at its first ready."""
    await conn.expect("createBacktestSession")
    for sid in ("a", "b"):
        await conn.send(control("sessionCreated", {"sessionId": sid, "rpcEndpoint": f"/x/{sid}"}))
    split = {"controlSessionId": "batch", "sessionIds": ["a", "b"]}
    await conn.send(
        control("sessionsCreatedV2", {**split, "startSlots": [10, 20], "endSlots": [19, 29]})
    )
    for sid, start in (("a", 10), ("b", 20)):
        await conn.send(_event(sid, 1, "slotNotification", start))
        await conn.send(_event(sid, 2, "readyForContinue"))


async def _attached(conn: FakeConnection) -> dict[str, Any]:
    request = await conn.expect("attachParallelControlSessionV2")
    attached = {"controlSessionId": "batch", "sessionIds": ["a", "b"]}
    await conn.send(control("parallelSessionAttachedV2", attached))
    return dict(request["params"])


async def _both_ready(batch: ManagedParallelSession) -> None:
    async with trio.open_nursery() as nursery:
        for sub in batch.sub_sessions:
            nursery.start_soon(until_ready, sub)


RESUMABLE = CreateSession(start_slot=10, end_slot=29, disconnect_timeout_secs=60)


@asynccontextmanager
async def _scripted_batch(
    script: Script,
) -> AsyncIterator[tuple[FakeServer, ManagedParallelSession]]:
    """A batch on a scripted fake server, once both sub-sessions are ready."""
    async with (
        open_fake_server(script) as fake,
        open_parallel_session(URL, SECRET_KEY, RESUMABLE, connector=fake) as batch,
    ):
        await _both_ready(batch)
        yield fake, batch


async def test_a_replayed_duplicate_sub_session_event_is_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The re-attach replays events each sub-session already has (a server replaying from
    # an older mark): each is dropped once, counted for its own sub-session.
    attaches: list[dict[str, Any]] = []

    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await _create_batch(conn)
            await conn.close(1011)
            return
        attaches.append(await _attached(conn))
        await conn.send(_event("a", 1, "slotNotification", 10))
        await conn.send(_event("a", 2, "readyForContinue"))
        await conn.send(_event("b", 2, "readyForContinue"))
        await conn.send(_event("a", 3, "status", {"status": "x"}))
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))

    async with _scripted_batch(script) as (fake, batch):
        a, _ = batch.sub_sessions
        with trio.fail_after(600):
            assert await a.next_event() == Status("x")
        stats = batch.statistics()
    assert attaches == [{"control_session_id": "batch", "last_sequences": {"a": 2, "b": 2}}]
    assert stats.sub_sessions["a"].duplicates_dropped == 2
    assert stats.sub_sessions["b"].duplicates_dropped == 1
    assert stats.sub_sessions["a"].events == {"Slot": 1, "ReadyForContinue": 1, "Status": 1}
    assert len(fake.of("control")) == 2


@pytest.mark.parametrize(
    ("answer", "final"),
    [
        ({"SessionNotFound": {"session_id": "batch"}}, True),
        ("SessionOwnerMismatch", True),
        ({"Internal": {"error": "restarting"}}, False),
    ],
    ids=["not-found", "owner-mismatch", "internal"],
)
async def test_a_refused_batch_attach(
    answer: object, final: bool, autojump_clock: trio.abc.Clock
) -> None:
    # client.md §3: SessionNotFound and SessionOwnerMismatch are final for every
    # sub-session; any other error answering the attach is retried.
    async def script(conn: FakeConnection) -> None:
        if conn.number == 1:
            await _create_batch(conn)
            await conn.close(1011)
            return
        if conn.number == 2:
            await conn.expect("attachParallelControlSessionV2")
            await conn.send(control("error", answer))
            await conn.hang()
        await _attached(conn)
        await conn.expect("resumeAttachedSession")
        await conn.send(control("success"))
        await conn.send(_event("a", 3, "status", {"status": "back"}))

    async with _scripted_batch(script) as (fake, batch):
        a, b = batch.sub_sessions
        with trio.fail_after(600):
            if final:
                for sub in (a, b):
                    with pytest.raises(ControlFailedError, match="not retried"):
                        await sub.next_event()
            else:
                assert await a.next_event() == Status("back")
        history = batch.status.history
    assert len(fake.of("control")) == (2 if final else 3)
    causes = [s.cause for s in history if isinstance(s, Reconnecting)]
    if final:
        assert [c.kind for c in causes] == [CauseKind.CLOSED]
        assert isinstance(history[-1], Failed)
    else:
        assert [c.kind for c in causes] == [CauseKind.CLOSED, CauseKind.PROTOCOL]


async def test_batch_level_traffic_reaches_no_sub_session_and_is_counted(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(conn: FakeConnection) -> None:
        await _create_batch(conn)
        await conn.send(control("error", {"InvalidRequest": {"error": "for the batch"}}))
        await conn.send(_event("nobody", 1, "slotNotification", 99))
        await conn.send(control("batchNewsV9", {"x": 1}))
        await conn.send(_event("a", 3, "status", {"status": "after"}))

    async with _scripted_batch(script) as (fake, batch):
        a, _ = batch.sub_sessions
        with trio.fail_after(600):
            assert await a.next_event() == Status("after")
        stats = batch.statistics()
    assert stats.control_unknown_messages == 3
    assert stats.control_protocol_errors == 0
    assert all(s.events == {"Slot": 1, "ReadyForContinue": 1} for s in [stats.sub_sessions["b"]])
    assert any("for the batch" in r.getMessage() for r in caplog.records)
    assert len(fake.of("control")) == 1


def _local_server() -> AbstractAsyncContextManager[LocalServer]:
    return open_local_server(
        api_keys=(SECRET_KEY,), tcp=False, seed=5, bundle_size=10, transactions_per_slot=4.0
    )


@asynccontextmanager
async def _two_ready_sub_sessions(server: LocalServer) -> AsyncIterator[ManagedParallelSession]:
    """A batch of two sub-sessions (slots 0..9, 10..19) on ``server``, both ready."""
    create = CreateSession(start_slot=0, end_slot=19, disconnect_timeout_secs=60)
    async with open_parallel_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as batch:
        await _both_ready(batch)
        yield batch


async def test_send_continue_to_on_sub_sessions(autojump_clock: trio.abc.Clock) -> None:
    async with _local_server() as server, _two_ready_sub_sessions(server) as batch:
        a, b = batch.sub_sessions
        paused: list[ManagedEvent] = []
        for sub, slot, batch_index in ((a, 3, None), (b, 12, 1)):
            await sub.send_continue_to(slot, batch_index)
            events = [await sub.next_event()]
            while not isinstance(events[-1], Paused):
                events.append(await sub.next_event())
            paused.append(events[-1])
            assert [e.slot for e in events if isinstance(e, Slot)] == list(
                range(sub.range[0] + 1, slot + 1)  # type: ignore[index]
            )
            await sub.send_continue(ContinueParams(advance_count=20))  # to the end
        results = await _drive_all(batch.sub_sessions, stride=20)
    assert paused == [Paused(3, None), Paused(12, 1)]
    for sub in (a, b):
        assert isinstance(results[sub.info.session_id][-1], Completed)
        assert sub.range is not None
        start, end = sub.range
        assert server.executed_slots(sub.info.session_id) == list(range(start, end + 1))


async def test_use_after_close(autojump_clock: trio.abc.Clock) -> None:
    # Misuse gets a clear error and sends nothing: a sub-session after its aclose, any
    # session after its block was left.
    async with _local_server() as server:
        async with _two_ready_sub_sessions(server) as batch:
            a, b = batch.sub_sessions
            await a.aclose()
            await a.aclose()  # idempotent
            with pytest.raises(ControlClosedError):
                await a.send_continue(ContinueParams(advance_count=1))
            with pytest.raises(ControlClosedError):
                await a.send_continue_to(5)
            with pytest.raises(ControlClosedError):
                await a.next_event()
            assert server.executed_slots(a.info.session_id) == []
        with trio.fail_after(60):
            with pytest.raises(ControlClosedError):
                await b.send_continue(ContinueParams(advance_count=1))
            with pytest.raises(ControlClosedError):
                await b.next_event()
            with pytest.raises(ControlClosedError):
                await b.subscribe_transactions(server.ledger.programs[:1])
        single = CreateSession(start_slot=0, slot_count=3, disconnect_timeout_secs=60)
        async with open_backtest_session(
            server.url, SECRET_KEY, single, connector=server.connector()
        ) as session:
            await until_ready(session)
        with trio.fail_after(60):
            with pytest.raises(ControlClosedError):
                await session.send_continue(ContinueParams(advance_count=1))
            with pytest.raises(ControlClosedError):
                await session.next_event()
            with pytest.raises(ControlClosedError):
                await session.subscribe_transactions(server.ledger.programs[:1])
        assert server.executed_slots(b.info.session_id) == []
        assert server.executed_slots(session.info.session_id) == []
