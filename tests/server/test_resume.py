"""Resumable sessions (protocol.md §3.1): sequenced replay, attach, resume, hold, expiry."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import Control, open_control, open_data
from trio_backtest.protocol import (
    AttachBacktestSession,
    Completed,
    Continue,
    ContinueParams,
    ControlMessage,
    CreateSession,
    InvalidRequest,
    ReadyForContinue,
    ResumeAttachedSession,
    Sequenced,
    ServerError,
    SessionAttached,
    SessionNotFound,
    SessionOwnerMismatch,
    Slot,
    Success,
)
from trio_backtest.server import LocalServer, open_local_server


async def _create_resumable(
    server: LocalServer, nursery: trio.Nursery, *, count: int = 30, linger: int = 30
) -> tuple[Control, str]:
    control = await open_control(server, nursery)
    created = await control.create(
        CreateSession(start_slot=1000, slot_count=count - 1, disconnect_timeout_secs=linger)
    )
    await control.recv_until(ReadyForContinue)
    return control, created.session_id


async def _read_until_dropped(control: Control) -> list[Sequenced[ControlMessage]]:
    """Everything the control socket delivers until it breaks."""
    seen: list[Sequenced[ControlMessage]] = []
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            seen.append(await control.recv())
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1006  # abnormal: no close frame came
    return seen


async def _attach(
    server: LocalServer, nursery: trio.Nursery, session_id: str, cursor: int | None
) -> Control:
    control = await open_control(server, nursery)
    await control.send(AttachBacktestSession(session_id, cursor))
    return control


async def test_attach_after_a_drop_replays_exactly_the_missing_messages(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _create_resumable(server, nursery)
        server.faults.drop("control", session_id=session_id, after_messages=6)
        await control.send(Continue(ContinueParams(advance_count=10)))
        before = await _read_until_dropped(control)
        assert [item.message for item in before] == [Slot(s) for s in range(1001, 1007)]
        # The last three never reached the application (lost in the client's buffers).
        cursor = before[-4].seq_id
        assert cursor is not None
        await trio.sleep(5)
        again = await _attach(server, nursery, session_id, cursor)
        reply = await again.recv()
        assert reply == Sequenced(None, SessionAttached(session_id, f"/backtest/{session_id}"))
        # Held until resumed: after the replay nothing more comes.
        replayed = []
        while True:
            with trio.move_on_after(5) as quiet:
                replayed.append(await again.recv())
            if quiet.cancelled_caught:
                break
        assert replayed == before[-3:]
        assert again.frames[1:] == control.frames[-3:]  # byte for byte, original seqIds
        nursery.cancel_scope.cancel()


async def test_a_detached_session_holds_and_goes_on_after_resume(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _create_resumable(server, nursery)
        server.faults.drop("control", session_id=session_id, after_messages=2)
        await control.send(Continue(ContinueParams(advance_count=20)))
        before = await _read_until_dropped(control)
        await trio.sleep(1)
        held_at = server.executed_slots(session_id)
        # It finished the slot in progress and holds at the boundary.
        assert len(held_at) <= 2
        await trio.sleep(20)
        assert server.executed_slots(session_id) == held_at
        assert server.statistics().sessions_detached == 1
        again = await _attach(server, nursery, session_id, before[-1].seq_id)
        await again.recv()  # sessionAttached
        await trio.sleep(5)
        assert server.executed_slots(session_id) == held_at  # attached, not yet resumed
        await again.send(ResumeAttachedSession())
        rest = await again.recv_until(ReadyForContinue)
        assert Sequenced(rest[-1].seq_id, ReadyForContinue()) == rest[-1]
        assert any(item.message == Success() for item in rest)
        assert server.executed_slots(session_id) == list(range(1000, 1020))
        seq_ids = [item.seq_id for item in control.received + again.received if item.seq_id]
        assert sorted(seq_ids) == list(range(1, max(seq_ids) + 1))
        nursery.cancel_scope.cancel()


async def test_resume_when_idle_sends_a_fresh_ready(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _create_resumable(server, nursery)
        ready_seq = control.received[-1].seq_id
        assert ready_seq is not None
        assert server.faults.drop("control", session_id=session_id) == 1
        await trio.sleep(1)
        # The continue the client sent was lost with the connection: it resumes idle.
        again = await _attach(server, nursery, session_id, ready_seq)
        assert (await again.recv()).message == SessionAttached(
            session_id, f"/backtest/{session_id}"
        )
        await again.send(ResumeAttachedSession())
        assert await again.recv() == Sequenced(ready_seq + 1, Success())
        assert await again.recv() == Sequenced(ready_seq + 2, ReadyForContinue())
        await again.send(Continue(ContinueParams(advance_count=1)))
        assert (await again.recv()).message == Slot(1001)
        nursery.cancel_scope.cancel()


async def test_resume_after_a_replay_that_carried_the_ready_adds_none(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _create_resumable(server, nursery)
        ready_seq = control.received[-1].seq_id
        assert ready_seq is not None
        server.faults.drop("control", session_id=session_id)
        again = await _attach(server, nursery, session_id, ready_seq - 1)
        await again.recv()
        assert await again.recv() == Sequenced(ready_seq, ReadyForContinue())
        await again.send(ResumeAttachedSession())
        assert await again.recv() == Sequenced(ready_seq + 1, Success())
        with trio.move_on_after(5):
            extra = await again.recv()
            pytest.fail(f"unexpected {extra}")
        nursery.cancel_scope.cancel()


async def test_attach_with_a_null_cursor_replays_everything_kept(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _create_resumable(server, nursery)
        server.faults.drop("control", session_id=session_id)
        again = await _attach(server, nursery, session_id, None)
        await again.recv()
        replayed = [await again.recv() for _ in control.received]
        assert replayed == control.received
        assert again.frames[1:] == control.frames
        nursery.cancel_scope.cancel()


async def test_a_session_expires_after_its_disconnect_timeout(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        _, kept = await _create_resumable(server, nursery, linger=10)
        _, lost = await _create_resumable(server, nursery, linger=10)
        data = await open_data(server, nursery, lost)
        data.collect(nursery)
        server.faults.drop("control")
        await trio.sleep(9)
        survivor = await _attach(server, nursery, kept, None)
        assert isinstance((await survivor.recv()).message, SessionAttached)
        await trio.sleep(2)
        late = await _attach(server, nursery, lost, None)
        assert (await late.recv()).message == ServerError(SessionNotFound(session_id=lost))
        await data.closed.wait()
        assert data.close_code == 4404
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            await open_data(server, nursery, lost)
        assert rejected.value.status_code == 404
        stats = server.statistics()
        assert stats.sessions_expired == 1
        assert server.session_ids() == (kept,)
        nursery.cancel_scope.cancel()


async def test_attach_to_an_unknown_session_is_session_not_found(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await _attach(server, nursery, "no-such-session", 3)
        answer = await control.recv()
        assert answer == Sequenced(None, ServerError(SessionNotFound(session_id="no-such-session")))
        nursery.cancel_scope.cancel()


async def test_attach_under_another_key_is_owner_mismatch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_local_server(api_keys=(SECRET_KEY, "second-key"), tcp=False) as server,
        trio.open_nursery() as nursery,
    ):
        _, session_id = await _create_resumable(server, nursery)
        server.faults.drop("control")
        thief = await open_control(server, nursery, key="second-key")
        await thief.send(AttachBacktestSession(session_id, None))
        assert (await thief.recv()).message == ServerError(SessionOwnerMismatch())
        owner = await _attach(server, nursery, session_id, None)
        assert isinstance((await owner.recv()).message, SessionAttached)
        nursery.cancel_scope.cancel()


async def test_a_non_resumable_session_dies_with_its_control_socket(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=1, slot_count=5))
        await control.recv_until(ReadyForContinue)
        data = await open_data(server, nursery, created.session_id)
        data.collect(nursery)
        server.faults.drop("control")
        await data.closed.wait()
        assert data.close_code == 4404
        again = await _attach(server, nursery, created.session_id, None)
        assert (await again.recv()).message == ServerError(
            SessionNotFound(session_id=created.session_id)
        )
        assert server.statistics().sessions_destroyed == 1
        nursery.cancel_scope.cancel()


async def test_attaching_a_live_session_takes_it_over(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        old, session_id = await _create_resumable(server, nursery)
        # The server has not noticed that the old socket is dead (a black hole).
        server.faults.black_hole("control", session_id=session_id)
        new = await _attach(server, nursery, session_id, old.received[-1].seq_id)
        assert isinstance((await new.recv()).message, SessionAttached)
        await new.send(ResumeAttachedSession())
        assert (await new.recv()).message == Success()
        assert (await new.recv()).message == ReadyForContinue()
        await new.send(Continue(ContinueParams(advance_count=30)))
        assert isinstance((await new.recv_until(Completed))[-1].message, Completed)
        nursery.cancel_scope.cancel()


async def test_attach_to_a_non_resumable_session_is_refused(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=1, slot_count=5))
        await control.recv_until(ReadyForContinue)
        other = await _attach(server, nursery, created.session_id, None)
        answer = (await other.recv()).message
        assert isinstance(answer, ServerError)
        assert isinstance(answer.error, InvalidRequest)
        nursery.cancel_scope.cancel()
