"""Live fault controls of a running server (server.md "Faults"), observed by a bare client."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import Control, open_control, open_data
from trio_backtest.protocol import (
    Completed,
    Continue,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Slot,
    Status,
)
from trio_backtest.server import ChaosConfig, Link, LocalServer, open_local_server


async def _ready_session(
    server: LocalServer, nursery: trio.Nursery, count: int = 20, **kwargs: object
) -> tuple[Control, str]:
    control = await open_control(server, nursery, **kwargs)  # type: ignore[arg-type]
    created = await control.create(CreateSession(start_slot=100, slot_count=count - 1))
    await control.recv_until(ReadyForContinue)
    return control, created.session_id


async def _close_code(ws: trio_websocket.WebSocketConnection) -> int | None:
    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
        while True:
            await ws.get_message()
    return None if closed.value.reason is None else closed.value.reason.code


async def test_drop_loses_the_socket_without_a_close_frame(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _ready_session(server, nursery)
        assert server.faults.drop("control", session_id=session_id) == 1
        assert await _close_code(control.ws) == 1006
        assert server.statistics().faults_fired == {"drop": 1}
        nursery.cancel_scope.cancel()


async def test_drop_after_n_messages_lets_exactly_n_through(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _ready_session(server, nursery)
        data = await open_data(server, nursery, session_id)
        for program in server.ledger.programs:
            await data.subscribe("transactionSubscribe", program)
        server.faults.drop("data", session_id=session_id, after_messages=25)
        data.collect(nursery)
        await control.send(Continue(ContinueParams(advance_count=5)))
        await data.closed.wait()
        assert data.close_code == 1006
        assert len(data.take()) == 25
        # The session itself goes on: only the data socket was lost.
        await control.recv_until(ReadyForContinue)
        assert len(server.executed_slots(session_id)) == 5
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 4404])
async def test_close_sends_the_chosen_code(
    server: LocalServer, autojump_clock: trio.testing.MockClock, code: int
) -> None:
    async with trio.open_nursery() as nursery:
        _, session_id = await _ready_session(server, nursery)
        data = await open_data(server, nursery, session_id)
        data.collect(nursery)
        assert server.faults.close("data", code, session_id=session_id, reason="test") == 1
        await data.closed.wait()
        assert data.close_code == code
        assert server.statistics().faults_fired == {"close": 1}
        nursery.cancel_scope.cancel()


async def test_black_hole_passes_nothing_then_traffic_flows_again(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _ready_session(server, nursery)
        server.faults.black_hole("control", session_id=session_id, duration=30)
        with trio.move_on_after(10) as unanswered:
            await control.ws.ping(b"are you there")
        assert unanswered.cancelled_caught
        await control.send(Continue(ContinueParams(advance_count=1)))  # swallowed
        with trio.move_on_after(10) as silent:
            await control.recv()
        assert silent.cancelled_caught
        assert server.executed_slots(session_id) == []
        await trio.sleep(15)  # the hole closes at 30 s
        with trio.fail_after(5):
            await control.ws.ping(b"and now?")
        await control.send(Continue(ContinueParams(advance_count=1)))
        assert (await control.recv()).message == Slot(101)
        assert server.statistics().faults_fired == {"black_hole": 1}
        nursery.cancel_scope.cancel()


async def test_refused_upgrades_get_the_chosen_status(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        _, session_id = await _ready_session(server, nursery)
        server.faults.refuse_upgrades(2, 503, plane="data")
        for _ in range(2):
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                await open_data(server, nursery, session_id)
            assert rejected.value.status_code == 503
        await _ready_session(server, nursery)  # the control plane was not affected
        data = await open_data(server, nursery, session_id)  # the third one goes through
        await data.subscribe("transactionSubscribe", server.ledger.programs[0])
        server.faults.refuse_upgrades(1, 401)
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            await open_control(server, nursery)
        assert rejected.value.status_code == 401
        stats = server.statistics()
        assert stats.faults_fired == {"refuse": 3}
        assert stats.upgrades_refused == {"401": 1, "503": 2}
        nursery.cancel_scope.cancel()


async def test_stalled_startup_keeps_sending_status(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    server.faults.stall_startup(6.0, count=1)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        control = await open_control(server, nursery)
        await control.create(CreateSession(start_slot=1, slot_count=3))
        early = await control.recv_until(ReadyForContinue)
        assert trio.current_time() - started >= 6.0
        statuses = [item.message for item in early if isinstance(item.message, Status)]
        assert len(statuses) >= 6
        # The stall was for one create only.
        started = trio.current_time()
        other = await open_control(server, nursery)
        await other.create(CreateSession(start_slot=1, slot_count=3))
        await other.recv_until(ReadyForContinue)
        assert trio.current_time() - started < 1.0
        nursery.cancel_scope.cancel()


async def _timed_run(
    server: LocalServer, nursery: trio.Nursery, link: Link, slots: int, done: list[float]
) -> None:
    control, session_id = await _ready_session(server, nursery, count=slots)
    data = await open_data(server, nursery, session_id, connector=server.connector(link=link))
    for program in server.ledger.programs:
        await data.subscribe("transactionSubscribe", program)
    data.collect(nursery)
    await control.send(Continue(ContinueParams(advance_count=slots)))
    await control.recv_until(Completed)
    await data.closed.wait()
    done.append(trio.current_time())


async def test_a_shared_link_divides_one_budget_among_connections(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    rate = 200_000.0
    alone_link = Link(rate)
    alone: list[float] = []
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await _timed_run(server, nursery, alone_link, 8, alone)
        alone_time = alone[0] - start
        alone_bytes = alone_link.statistics().bytes_passed
        nursery.cancel_scope.cancel()
    assert alone_bytes / alone_time == pytest.approx(rate, rel=0.1)

    shared_link = Link(rate)
    shared: list[float] = []
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        async with trio.open_nursery() as runs:
            runs.start_soon(_timed_run, server, nursery, shared_link, 8, shared)
            runs.start_soon(_timed_run, server, nursery, shared_link, 8, shared)
        nursery.cancel_scope.cancel()
    # Same ledger slots, same bytes per session: two of them take twice as long, side by side.
    assert shared_link.statistics().bytes_passed == pytest.approx(2 * alone_bytes, rel=0.01)
    for finished in shared:
        assert (finished - start) / alone_time == pytest.approx(2.0, rel=0.1)


async def test_set_link_shapes_every_new_connection(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    link = Link(50_000.0)
    server.set_link(link)
    async with trio.open_nursery() as nursery:
        await _ready_session(server, nursery, count=2)
        assert link.statistics().bytes_passed > 0
        server.set_link(None)
        before = link.statistics().bytes_passed
        await _ready_session(server, nursery, count=2)
        assert link.statistics().bytes_passed == before
        nursery.cancel_scope.cancel()


async def test_chaos_drops_and_closes_with_its_seeded_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chaos = ChaosConfig(seed=5, drop_probability=1.0, plane="data")
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, chaos=chaos) as server,
        trio.open_nursery() as nursery,
    ):
        _, session_id = await _ready_session(server, nursery)
        data = await open_data(server, nursery, session_id)
        await data.request("transactionSubscribe", [server.ledger.programs[0], {}])
        data.collect(nursery)
        await data.closed.wait()
        assert data.close_code == 1006
        assert data.take()  # the ack went out, then the socket was lost
        assert server.statistics().faults_fired == {"chaos_drop": 1}
        nursery.cancel_scope.cancel()
    chaos = ChaosConfig(seed=5, close_probability=1.0, close_codes=(1013,), plane="control")
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, chaos=chaos) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        await control.create(CreateSession(start_slot=1, slot_count=3))
        assert await _close_code(control.ws) == 1013
        nursery.cancel_scope.cancel()


async def test_chaos_interval_faults_hit_live_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chaos = ChaosConfig(seed=1, mean_interval=5.0, close_codes=(1012,))
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, chaos=chaos) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        code = await _close_code(control.ws)
        assert code in (1006, 1012)
        fired = server.statistics().faults_fired
        assert sum(fired.values()) >= 1
        assert set(fired) <= {"chaos_drop", "chaos_close"}
        nursery.cancel_scope.cancel()
