"""Control-plane conformance (protocol.md §2-§3), driven by a bare trio-websocket client."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import (
    expected_summary,
    notification_signatures,
    open_control,
    open_data,
    run_to_completion,
    signatures_for,
)
from trio_backtest.protocol import (
    Completed,
    Continue,
    ContinueParams,
    ContinueTo,
    CreateSession,
    DiscoveryBatch,
    InvalidRequest,
    InvalidTransactionEncoding,
    InvalidTransactionFormat,
    Paused,
    ReadyForContinue,
    ServerError,
    SessionCreated,
    Slot,
    Status,
    Success,
)
from trio_backtest.server import LocalServer, open_local_server


async def test_create_answers_created_statuses_start_slot_then_ready(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=50, slot_count=3))
        rest = await control.recv_until(ReadyForContinue)
        messages = [item.message for item in rest]
        assert created.rpc_endpoint == f"/backtest/{created.session_id}"
        assert isinstance(messages[-1], ReadyForContinue)
        assert messages[-2] == Slot(50)
        assert messages[:-2]
        assert all(isinstance(m, Status) for m in messages[:-2])
        assert all(item.seq_id is None for item in [*control.received])
        nursery.cancel_scope.cancel()


async def test_continue_n_executes_exactly_n_slots(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=10, slot_count=20))
        await control.recv_until(ReadyForContinue)
        await control.send(Continue(ContinueParams(advance_count=3)))
        messages = [item.message for item in await control.recv_until(ReadyForContinue)]
        assert messages == [Slot(11), Slot(12), Slot(13), ReadyForContinue()]
        assert server.executed_slots(created.session_id) == [10, 11, 12]
        nursery.cancel_scope.cancel()


async def test_range_of_k_slots_completes_after_exactly_k_with_true_counts(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(
            CreateSession(start_slot=200, end_slot=206, send_summary=True)
        )
        seen = await run_to_completion(control, stride=3)
        slots = [item.message.slot for item in seen if isinstance(item.message, Slot)]
        assert slots == list(range(200, 207))
        assert server.executed_slots(created.session_id) == list(range(200, 207))
        completed = seen[-1].message
        assert isinstance(completed, Completed)
        assert completed.summary == expected_summary(server, 200, 206)
        # completed is last: nothing follows until the client speaks.
        with trio.move_on_after(5):
            await control.recv()
            pytest.fail("a message followed completed")
        await control.send('{"method": "closeBacktestSession"}')
        assert (await control.recv()).message == Success()
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await control.recv()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1000
        assert server.session_ids() == ()
        nursery.cancel_scope.cancel()


async def test_summary_is_null_unless_asked_for(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.create(CreateSession(start_slot=1, slot_count=1))
        completed = (await run_to_completion(control))[-1].message
        assert completed == Completed(summary=None, agent_stats=None)
        nursery.cancel_scope.cancel()


async def test_continue_while_not_ready_is_invalid_request_and_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_local_server(
            api_keys=(SECRET_KEY,), tcp=False, startup_delay=3.0, queue_size=1
        ) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=10, slot_count=20))
        # Still starting up: not ready yet.
        await control.send(Continue(ContinueParams(advance_count=5)))
        before = await control.recv_until(ServerError)
        error = before[-1].message
        assert isinstance(error, ServerError)
        assert error.error == InvalidRequest(error="session is not ready")
        assert not any(isinstance(item.message, ReadyForContinue) for item in before)
        await control.recv_until(ReadyForContinue)
        assert server.executed_slots(created.session_id) == []
        # A subscriber that does not read yet holds the session inside slot 10.
        data = await open_data(
            server,
            nursery,
            created.session_id,
            connector=server.connector(buffer_size=512),
            message_queue_size=1,
        )
        for program in server.ledger.programs:
            await data.subscribe("transactionSubscribe", program)
        await control.send(Continue(ContinueParams(advance_count=2)))
        await trio.sleep(1)
        assert server.session_state(created.session_id) == "running"
        await control.send(Continue(ContinueParams(advance_count=7)))
        error = (await control.recv()).message
        assert error == ServerError(InvalidRequest(error="session is not ready"))
        nursery.start_soon(data.drain, 1000.0)
        messages = [item.message for item in await control.recv_until(ReadyForContinue)]
        assert messages == [Slot(11), Slot(12), ReadyForContinue()]
        assert server.executed_slots(created.session_id) == [10, 11]
        nursery.cancel_scope.cancel()


async def test_continue_to_pauses_before_the_batch_and_continue_finishes_the_slot(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = server.ledger.programs[0]
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=30, slot_count=10))
        data = await open_data(server, nursery, created.session_id)
        await data.subscribe("transactionSubscribe", program)
        await control.recv_until(ReadyForContinue)
        await control.send(ContinueTo(slot=32, batch_index=4))
        messages = [item.message for item in await control.recv_until(Paused)]
        assert messages == [Slot(31), Slot(32), Paused(32, 4)]
        received = notification_signatures(await data.drain())
        partial = [tx for tx in server.ledger.slot(32).transactions[:4] if tx.mentions(program)]
        assert received == signatures_for(server, program, 30, 31) + [t.signature for t in partial]
        await control.send(Continue(ContinueParams(advance_count=1)))
        assert [i.message for i in await control.recv_until(ReadyForContinue)] == [
            Slot(33),
            ReadyForContinue(),
        ]
        assert server.executed_slots(created.session_id) == [30, 31, 32]
        rest = notification_signatures(await data.drain())
        assert received + rest == signatures_for(server, program, 30, 32)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("slot", "batch_index"), [(29, 0), (41, 0), (30, -1)], ids=["before", "after", "negative"]
)
async def test_continue_to_outside_the_range_is_invalid(
    server: LocalServer, autojump_clock: trio.testing.MockClock, slot: int, batch_index: int
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=30, end_slot=40))
        await control.recv_until(ReadyForContinue)
        await control.send(ContinueTo(slot=slot, batch_index=batch_index))
        error = (await control.recv()).message
        assert isinstance(error, ServerError)
        assert isinstance(error.error, InvalidRequest)
        assert server.session_state(created.session_id) == "ready"
        nursery.cancel_scope.cancel()


async def test_discoveries_arrive_before_the_first_ready(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = server.ledger.programs[3]
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.create(CreateSession(start_slot=70, slot_count=20, discoveries=[program]))
        early = [i.message for i in await control.recv_until(ReadyForContinue)]
        batches = [m for m in early if isinstance(m, DiscoveryBatch)]
        lookahead = server.config.discovery_lookahead
        expected = [
            (tx.slot, tx.index, tx.wire)
            for slot in range(70, 70 + lookahead)
            for tx in server.ledger.slot(slot).transactions
            if tx.mentions(program)
        ]
        assert expected
        assert [(b.slot, b.batch_index, b.transactions[0]) for b in batches] == expected
        assert {b.matched for b in batches} == {(program,)}
        # The batch is the real transaction: it decodes, and it invokes the program.
        decoded = batches[0].decode_transactions()[0]
        keys = decoded.message.account_keys
        assert program in {str(keys[ix.program_id_index]) for ix in decoded.message.instructions}
        nursery.cancel_scope.cancel()


async def test_bad_injected_transaction_is_an_error_and_the_session_stays_ready(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=5, slot_count=5))
        await control.recv_until(ReadyForContinue)
        real = server.ledger.slot(1).transactions[0].wire
        await control.send(Continue(ContinueParams(transactions=(real, "not base64!"))))
        error = (await control.recv()).message
        assert isinstance(error, ServerError)
        assert isinstance(error.error, InvalidTransactionEncoding)
        assert error.error.index == 1
        # Base64 of bytes that are no transaction: the server really decodes them.
        await control.send(Continue(ContinueParams(transactions=(real, "AAAA"))))
        error = (await control.recv()).message
        assert isinstance(error, ServerError)
        assert isinstance(error.error, InvalidTransactionFormat)
        assert error.error.index == 1
        assert server.session_state(created.session_id) == "ready"
        await control.send(Continue(ContinueParams(transactions=(real,))))
        messages = [i.message for i in await control.recv_until(ReadyForContinue)]
        assert Slot(6) in messages
        nursery.cancel_scope.cancel()


async def test_snake_case_server_spells_inline_keys_snake_case(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, snake_case=True) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        created = await control.create(
            CreateSession(start_slot=1, slot_count=3, disconnect_timeout_secs=10)
        )
        assert isinstance(created, SessionCreated)
        first = control.frames[0]
        assert isinstance(first, str)
        assert '"session_id"' in first
        assert '"rpc_endpoint"' in first
        assert '"seq_id":1' in first
        assert "sessionId" not in first
        nursery.cancel_scope.cancel()


async def test_resumable_messages_are_numbered_from_one_and_plain_ones_are_not(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        resumable = await open_control(server, nursery)
        await resumable.create(
            CreateSession(start_slot=1, slot_count=3, disconnect_timeout_secs=10)
        )
        await run_to_completion(resumable)
        seq_ids = [item.seq_id for item in resumable.received]
        assert seq_ids == list(range(1, len(seq_ids) + 1))
        plain = await open_control(server, nursery)
        await plain.create(CreateSession(start_slot=1, slot_count=3))
        await run_to_completion(plain)
        assert {item.seq_id for item in plain.received} == {None}
        nursery.cancel_scope.cancel()


async def test_requests_need_a_session_on_the_connection(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.send(Continue())
        error = (await control.recv()).message
        assert error == ServerError(InvalidRequest(error="no session on this connection"))
        await control.create(CreateSession(start_slot=1, slot_count=1))
        await control.recv_until(ReadyForContinue)
        await control.send(encode_create(1, 2))
        error = (await control.recv()).message
        assert error == ServerError(InvalidRequest(error="this connection already has a session"))
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ('{"startSlot": 10, "endSlot": 9}', "endSlot"),
        ('{"startSlot": -1, "endSlot": 9}', "startSlot"),
        ('{"startSlot": 1, "endSlot": 9, "disconnectTimeoutSecs": 901}', "disconnectTimeoutSecs"),
    ],
    ids=["reversed", "negative", "timeout"],
)
async def test_invalid_create_parameters_are_refused(
    server: LocalServer, autojump_clock: trio.testing.MockClock, params: str, fragment: str
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.send(f'{{"method": "createBacktestSession", "params": {params}}}')
        error = (await control.recv()).message
        assert isinstance(error, ServerError)
        assert isinstance(error.error, InvalidRequest)
        assert fragment in error.error.error
        assert server.session_ids() == ()
        nursery.cancel_scope.cancel()


def encode_create(start: int, end: int) -> str:
    return f'{{"method":"createBacktestSession","params":{{"startSlot":{start},"endSlot":{end}}}}}'


async def test_requests_are_read_in_either_spelling(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.send(
            '{"method": "createBacktestSession", "params": {"start_slot": 5, "end_slot": 9,'
            ' "send_summary": true, "someFutureOption": [1, 2]}}'
        )
        created = (await control.recv()).message
        assert isinstance(created, SessionCreated)
        await control.recv_until(ReadyForContinue)
        await control.send('{"method": "continueTo", "params": {"slot": 6, "batch_index": 2}}')
        assert [i.message for i in await control.recv_until(Paused)] == [Slot(6), Paused(6, 2)]
        await control.send('{"method": "continue", "params": {"advance_count": 9}}')
        completed = (await control.recv_until(Completed))[-1].message
        assert isinstance(completed, Completed)
        assert completed.summary == expected_summary(server, 5, 9)
        await control.send('{"method": "closeBacktestSession", "params": null}')
        assert (await control.recv()).message == Success()
        nursery.cancel_scope.cancel()
