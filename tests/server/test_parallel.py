"""Parallel batches (protocol.md §3.2): bundle split, sessionEventV2, failures, attach."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import Control, notification_signatures, open_control, open_data
from trio_backtest.protocol import (
    AdvanceSlotFailed,
    AttachParallelControlSessionV2,
    CloseSessionV1,
    Completed,
    ContinueParams,
    ContinueSessionV1,
    CreateBacktestSession,
    CreateSession,
    InvalidRequest,
    ParallelSessionAttachedV2,
    ReadyForContinue,
    ResumeAttachedSession,
    Sequenced,
    ServerError,
    SessionCreated,
    SessionEventV2,
    SessionsCreatedV2,
    Slot,
    Status,
    Success,
)
from trio_backtest.server import LocalServer, open_local_server


@pytest.fixture
async def bundled() -> AsyncIterator[LocalServer]:
    """A memory server whose bundles are 10 slots long."""
    async with open_local_server(
        api_keys=(SECRET_KEY,), tcp=False, seed=3, bundle_size=10, transactions_per_slot=5.0
    ) as server:
        yield server


async def _create_batch(
    server: LocalServer, nursery: trio.Nursery, start: int, end: int
) -> tuple[Control, SessionsCreatedV2]:
    control = await open_control(server, nursery)
    params = CreateSession(start_slot=start, end_slot=end, disconnect_timeout_secs=30)
    await control.send(CreateBacktestSession(params, parallel=True))
    created = await control.recv_until(SessionsCreatedV2)
    batch = created[-1].message
    assert isinstance(batch, SessionsCreatedV2)
    return control, batch


def _events(control: Control) -> dict[str, list[tuple[int, object]]]:
    by_session: dict[str, list[tuple[int, object]]] = defaultdict(list)
    for item in control.received:
        if isinstance(item.message, SessionEventV2):
            by_session[item.message.session_id].append((item.message.seq_id, item.message.event))
    return by_session


async def _drive(control: Control, pending: set[str], stride: int = 4) -> None:
    """Continue every sub-session at each ready until all of ``pending`` completed or failed."""
    while pending:
        item = await control.recv()
        message = item.message
        if not isinstance(message, SessionEventV2):
            continue
        if isinstance(message.event, ReadyForContinue):
            await control.send(
                ContinueSessionV1(message.session_id, ContinueParams(advance_count=stride))
            )
        elif isinstance(message.event, Completed | ServerError):
            pending.discard(message.session_id)


async def test_the_split_follows_bundles_and_is_announced_first(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 5, 34)
        expected = bundled.ledger.bundles(5, 34)
        assert expected == [(5, 9), (10, 19), (20, 29), (30, 34)]
        assert list(zip(batch.start_slots, batch.end_slots, strict=True)) == expected
        created = [item.message for item in control.received[:-1]]
        assert all(isinstance(m, SessionCreated) for m in created)
        assert [m.session_id for m in created if isinstance(m, SessionCreated)] == list(
            batch.session_ids
        )
        assert all(item.seq_id is None for item in control.received)
        nursery.cancel_scope.cancel()


async def test_events_are_tagged_per_sub_session_with_their_own_sequence(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 5, 34)
        await _drive(control, set(batch.session_ids))
        events = _events(control)
        assert set(events) == set(batch.session_ids)
        for sub, start, end in zip(
            batch.session_ids, batch.start_slots, batch.end_slots, strict=True
        ):
            seq_ids = [seq for seq, _ in events[sub]]
            assert seq_ids == list(range(1, len(seq_ids) + 1))
            kinds = [event for _, event in events[sub]]
            assert isinstance(kinds[0], Status)
            assert Slot(start) in kinds
            assert [e.slot for e in kinds if isinstance(e, Slot)] == list(range(start, end + 1))
            assert isinstance(kinds[-1], Completed)
            assert bundled.executed_slots(sub) == list(range(start, end + 1))
        # Only wrapped events carry a sequence; nothing is sequenced at the top level.
        assert all(item.seq_id is None for item in control.received)
        nursery.cancel_scope.cancel()


async def test_each_sub_session_streams_its_own_slots(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = bundled.ledger.programs[0]
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 8, 21)
        sockets = {}
        for sub in batch.session_ids:
            data = await open_data(bundled, nursery, sub)
            await data.subscribe("transactionSubscribe", program)
            data.collect(nursery)
            sockets[sub] = data
        await _drive(control, set(batch.session_ids))
        for sub, start, end in zip(
            batch.session_ids, batch.start_slots, batch.end_slots, strict=True
        ):
            await sockets[sub].closed.wait()
            got = notification_signatures(sockets[sub].take())
            want = [
                tx.signature
                for slot in range(start, end + 1)
                for tx in bundled.ledger.slot(slot).transactions
                if tx.mentions(program)
            ]
            assert got == want
        nursery.cancel_scope.cancel()


async def test_parallel_mode_requires_a_disconnect_timeout(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(bundled, nursery)
        await control.send(
            CreateBacktestSession(CreateSession(start_slot=0, end_slot=30), parallel=True)
        )
        answer = (await control.recv()).message
        assert isinstance(answer, ServerError)
        assert isinstance(answer.error, InvalidRequest)
        assert "disconnectTimeoutSecs" in answer.error.error
        assert bundled.session_ids() == ()
        nursery.cancel_scope.cancel()


async def test_a_failing_sub_session_leaves_the_others_running(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 0, 39)
        doomed = batch.session_ids[1]
        bundled.faults.fail_session(doomed, "disk on fire")
        await _drive(control, set(batch.session_ids))
        events = _events(control)
        last = events[doomed][-1][1]
        assert last == ServerError(AdvanceSlotFailed(slot=10, error="disk on fire"))
        assert bundled.session_state(doomed) == "failed"
        for sub in batch.session_ids:
            if sub != doomed:
                assert isinstance(events[sub][-1][1], Completed)
        await control.send(ContinueSessionV1(doomed, ContinueParams()))
        refused = (await control.recv()).message
        assert isinstance(refused, SessionEventV2)
        assert refused.session_id == doomed
        assert refused.event == ServerError(InvalidRequest(error="session is not ready"))
        assert bundled.statistics().faults_fired["fail_session"] == 1
        nursery.cancel_scope.cancel()


async def test_parallel_attach_replays_each_sub_session_past_its_cursor(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 0, 29)
        subs = batch.session_ids
        # Wait until every sub-session is ready, then lose the control socket.
        ready: set[str] = set()
        while len(ready) < len(subs):
            message = (await control.recv()).message
            if isinstance(message, SessionEventV2) and isinstance(message.event, ReadyForContinue):
                ready.add(message.session_id)
        bundled.faults.drop("control")
        before = _events(control)
        cursors = {subs[0]: 2, subs[1]: before[subs[1]][-1][0]}  # subs[2] missing: all of it
        again = await open_control(bundled, nursery)
        await again.send(AttachParallelControlSessionV2(batch.control_session_id, cursors))
        reply = await again.recv()
        assert reply == Sequenced(None, ParallelSessionAttachedV2(batch.control_session_id, subs))
        expected = [
            (sub, seq, event)
            for sub in subs
            for seq, event in before[sub]
            if seq > cursors.get(sub, 0)
        ]
        replayed = [await again.recv() for _ in expected]
        got = [
            (m.message.session_id, m.message.seq_id, m.message.event)
            for m in replayed
            if isinstance(m.message, SessionEventV2)
        ]
        assert got == expected
        await again.send(ResumeAttachedSession())
        assert await again.recv() == Sequenced(None, Success())
        # subs[1]'s ready was not replayed: it gets a fresh one, with a new sequence number.
        fresh = (await again.recv()).message
        assert fresh == SessionEventV2(subs[1], before[subs[1]][-1][0] + 1, ReadyForContinue())
        await again.send(ContinueSessionV1(subs[1], ContinueParams(advance_count=10)))
        await _drive(again, {subs[1]})
        assert bundled.executed_slots(subs[1]) == list(range(10, 20))
        nursery.cancel_scope.cancel()


async def test_close_session_v1_closes_one_sub_session(
    bundled: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, batch = await _create_batch(bundled, nursery, 0, 19)
        first, second = batch.session_ids
        await control.send(CloseSessionV1(first))
        second_ready = False
        while True:
            message = (await control.recv()).message
            if not isinstance(message, SessionEventV2):
                continue
            if message.session_id == second and message.event == ReadyForContinue():
                second_ready = True
            if message.event == Success():
                assert message.session_id == first
                break
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            await open_data(bundled, nursery, first)
        assert rejected.value.status_code == 404
        assert bundled.session_ids() == (second,)
        if second_ready:
            await control.send(ContinueSessionV1(second, ContinueParams(advance_count=10)))
        await _drive(control, {second})
        assert bundled.executed_slots(second) == list(range(10, 20))
        nursery.cancel_scope.cancel()


async def test_a_legacy_server_sends_no_slot_lists(autojump_clock: trio.testing.MockClock) -> None:
    async with (
        open_local_server(
            api_keys=(SECRET_KEY,), tcp=False, bundle_size=10, legacy_sessions_created=True
        ) as server,
        trio.open_nursery() as nursery,
    ):
        control, batch = await _create_batch(server, nursery, 5, 34)
        assert len(batch.session_ids) == 4
        assert (batch.start_slots, batch.end_slots) == (None, None)
        frame = next(f for f in control.frames if "sessionsCreatedV2" in str(f))
        assert "startSlots" not in str(frame)
        assert "endSlots" not in str(frame)
        nursery.cancel_scope.cancel()
