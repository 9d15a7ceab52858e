"""Bad input gets its documented answer and never disturbs another client's session."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import (
    Control,
    connect,
    expected_summary,
    good_session,
    open_control,
    open_data,
)
from trio_backtest.protocol import (
    Completed,
    Continue,
    ContinueParams,
    CreateSession,
    InvalidRequest,
    ReadyForContinue,
    RpcError,
    ServerError,
    SessionCreated,
)
from trio_backtest.server import LocalServer, open_local_server


async def _alongside_a_good_client(
    server: LocalServer, misbehave: Callable[[trio.Nursery], Awaitable[None]]
) -> None:
    """Run ``misbehave`` while a well-behaved client runs a whole session; check that one."""
    async with trio.open_nursery() as nursery:
        results: list[Completed] = []
        done = trio.Event()

        async def good() -> None:
            results.append(await good_session(server, start=400, count=6))
            done.set()

        nursery.start_soon(good)
        await misbehave(nursery)
        with trio.fail_after(60):
            await done.wait()
        assert results[0].summary == expected_summary(server, 400, 405)
        nursery.cancel_scope.cancel()


async def _expect_invalid_request(control: Control, fragment: str) -> None:
    answer = (await control.recv()).message
    assert isinstance(answer, ServerError)
    assert isinstance(answer.error, InvalidRequest)
    assert fragment in answer.error.error


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2, 3]", "expected a JSON object"),
        (
            '{"method": "createBacktestSession", "params": {"startSlot": "ten", "endSlot": 20}}',
            "startSlot",
        ),
        ('{"method": "createBacktestSession", "params": {"endSlot": 20}}', "startSlot"),
        ('{"method": "continue", "params": {"advanceCount": 0}}', "advance"),
        ('{"method": "makeMeASandwich"}', "unknown method"),
        ('{"method": "readyForContinue"}', "not a request"),
        ('{"params": {}}', "method"),
    ],
    ids=[
        "not-json",
        "not-object",
        "wrong-type",
        "missing-key",
        "bad-value",
        "unknown",
        "server-only",
        "no-method",
    ],
)
async def test_control_garbage_is_answered_and_the_socket_stays_open(
    server: LocalServer, autojump_clock: trio.testing.MockClock, frame: str, fragment: str
) -> None:
    async def misbehave(nursery: trio.Nursery) -> None:
        control = await open_control(server, nursery)
        await control.send(frame)
        await _expect_invalid_request(control, fragment)
        created = await control.create(CreateSession(start_slot=1, slot_count=2))
        assert isinstance(created, SessionCreated)

    await _alongside_a_good_client(server, misbehave)
    assert server.statistics().protocol_errors == 1


async def test_garbage_after_create_is_a_sequenced_session_error(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.create(CreateSession(start_slot=1, slot_count=2, disconnect_timeout_secs=5))
        await control.recv_until(ReadyForContinue)
        last = control.received[-1].seq_id
        assert last is not None
        await control.send("garbage")
        answer = await control.recv()
        assert answer.seq_id == last + 1
        assert isinstance(answer.message, ServerError)
        nursery.cancel_scope.cancel()


async def test_a_binary_control_frame_is_read_as_utf8_json(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        await control.ws.send_message(
            b'{"method":"createBacktestSession","params":{"startSlot":1,"endSlot":2}}'
        )
        assert isinstance((await control.recv()).message, SessionCreated)
        nursery.cancel_scope.cancel()


async def test_more_than_ten_garbage_frames_close_with_1008(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def misbehave(nursery: trio.Nursery) -> None:
        control = await open_control(server, nursery)
        for n in range(11):
            await control.send(f"garbage {n}")
        answers = []
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            while True:
                answers.append(await control.recv())
        assert len(answers) == 10
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1008

    await _alongside_a_good_client(server, misbehave)


async def test_an_oversized_frame_closes_with_1009(autojump_clock: trio.testing.MockClock) -> None:
    async with open_local_server(
        api_keys=(SECRET_KEY,), tcp=False, max_message_size=4096
    ) as server:

        async def misbehave(nursery: trio.Nursery) -> None:
            control = await open_control(server, nursery)
            await control.send('{"method": "continue", "params": {"x": "' + "a" * 10_000 + '"}}')
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await control.recv()
            assert closed.value.reason is not None
            assert closed.value.reason.code == 1009

        await _alongside_a_good_client(server, misbehave)


_SYSTEM = "11111111111111111111111111111111"


def _rpc(method: str, params: object) -> str:
    return orjson.dumps({"jsonrpc": "2.0", "id": 4, "method": method, "params": params}).decode()


@pytest.mark.parametrize(
    ("frame", "code", "has_id"),
    [
        ("{nope", -32700, False),
        (_rpc("slotSubscribe", []), -32601, True),
        (_rpc("transactionSubscribe", [42, {}]), -32602, True),
        (_rpc("transactionSubscribe", "x"), -32602, True),
        (_rpc("transactionSubscribe", ["not-base58-0OIl", {}]), -32602, True),
        (_rpc("accountDiffSubscribe", [_SYSTEM, {"address_type": "galaxy"}]), -32602, True),
        (_rpc("transactionSubscribe", [_SYSTEM, {"compression": "lz4"}]), -32602, True),
        (_rpc("transactionSubscribe", [_SYSTEM, {"replayFromSlot": -3}]), -32602, True),
        (_rpc("transactionUnsubscribe", [99]), -32602, True),
        ('{"jsonrpc": "2.0", "id": 4, "result": 1}', -32600, False),
    ],
    ids=[
        "not-json",
        "unknown-method",
        "address-not-string",
        "params-not-list",
        "address-not-base58",
        "unknown-address-type",
        "unknown-compression",
        "negative-replay",
        "unknown-subscription",
        "not-a-request",
    ],
)
async def test_data_plane_errors_are_answered_and_the_socket_stays_open(
    server: LocalServer, autojump_clock: trio.testing.MockClock, frame: str, code: int, has_id: bool
) -> None:
    async def misbehave(nursery: trio.Nursery) -> None:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=1, slot_count=2))
        data = await open_data(server, nursery, created.session_id)
        await data.ws.send_message(frame)
        answer = await data.recv()
        assert isinstance(answer, RpcError)
        assert answer.code == code
        assert answer.id == (4 if has_id else None)
        await data.subscribe("transactionSubscribe", server.ledger.programs[0])

    await _alongside_a_good_client(server, misbehave)


async def test_a_data_client_that_never_reads_holds_only_its_own_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, queue_size=8) as server:
        stuck: list[str] = []

        async def misbehave(nursery: trio.Nursery) -> None:
            control = await open_control(server, nursery)
            created = await control.create(CreateSession(start_slot=1, slot_count=50))
            await control.recv_until(ReadyForContinue)
            data = await open_data(
                server,
                nursery,
                created.session_id,
                connector=server.connector(buffer_size=4096),
                message_queue_size=1,
            )
            for program in server.ledger.programs:
                await data.subscribe("transactionSubscribe", program)
            await control.send(Continue(ContinueParams(advance_count=50)))
            stuck.append(created.session_id)
            # Policy "block": it never gets far while its subscriber does not read.

        await _alongside_a_good_client(server, misbehave)
        await trio.sleep(100)
        assert server.session_state(stuck[0]) == "running"
        assert len(server.executed_slots(stuck[0])) <= 1
        assert server.statistics().notifications_dropped == 0


async def test_policy_drop_drops_for_a_client_that_never_reads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_local_server(
            api_keys=(SECRET_KEY,), tcp=False, queue_size=8, backpressure="drop"
        ) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=1, slot_count=20))
        await control.recv_until(ReadyForContinue)
        data = await open_data(
            server,
            nursery,
            created.session_id,
            connector=server.connector(buffer_size=4096),
            message_queue_size=1,
        )
        for program in server.ledger.programs:
            await data.subscribe("transactionSubscribe", program)
        await control.send(Continue(ContinueParams(advance_count=21)))
        assert isinstance((await control.recv_until(Completed))[-1].message, Completed)
        assert server.statistics().notifications_dropped > 100
        nursery.cancel_scope.cancel()


async def test_a_control_client_that_never_reads_disturbs_nobody(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def misbehave(nursery: trio.Nursery) -> None:
        ws = await connect(server, nursery, message_queue_size=1)
        await ws.send_message(
            '{"method":"createBacktestSession","params":{"startSlot":1,"endSlot":3000,'
            '"discoveries":[{"programExecuted":"' + server.ledger.programs[0] + '"}]}}'
        )
        for _ in range(50):
            await ws.send_message('{"method":"continue","params":{"advanceCount":1000}}')

    await _alongside_a_good_client(server, misbehave)


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/backtest", None, 401),
        ("/backtest", "wrong-key", 401),
        ("/backtest/unknown-session", None, 404),
        ("/elsewhere", SECRET_KEY, 404),
        ("/backtest/a/b", None, 404),
    ],
    ids=["no-key", "wrong-key", "unknown-session", "unknown-path", "nested-path"],
)
async def test_refused_upgrades(
    server: LocalServer,
    autojump_clock: trio.testing.MockClock,
    path: str,
    key: str | None,
    status: int,
) -> None:
    async with trio.open_nursery() as nursery:
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            await connect(server, nursery, path, key=key)
        assert rejected.value.status_code == status
        assert server.statistics().upgrades_refused == {str(status): 1}
        nursery.cancel_scope.cancel()
