"""Hostile clients next to a well-behaved one: the good session completes whole, the server lives.

Each test runs one managed session (a transaction subscription, driven with ``drive``) while
bare trio-websocket clients misbehave on the same in-memory server, under the autojump clock.
The good session opens, subscribes and then waits on a gate; the hostile clients get into
position and open the gate, so their misbehaviour and the good session's execution interleave
in the same virtual instants.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest
import trio
import trio_websocket

from tests.client.helpers import drive, expected_transactions, signatures
from tests.conftest import SECRET_KEY
from tests.server.wire import (
    Control,
    Data,
    connect,
    notification_signatures,
    open_control,
    open_data,
    signatures_for,
)
from trio_backtest import Completed, CreateSession, open_backtest_session
from trio_backtest.protocol import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    InvalidRequest,
    ReadyForContinue,
    RpcError,
    RpcResult,
    ServerError,
    SessionNotFound,
    SessionOwnerMismatch,
    decode_rpc,
)
from trio_backtest.server import (
    LedgerConfig,
    LocalServer,
    ServerConfig,
    ServerStatistics,
    open_server,
)

#: A second valid key: the hostile clients' own, so they can hold sessions of their own.
HOSTILE_KEY = "hostile-key-5c1e"
#: Subscriptions one data socket may hold on these servers (small, to reach it fast).
SUB_LIMIT = 16
#: JSON-RPC "invalid request" and the server's per-socket limit code.
INVALID_REQUEST = -32600
LIMIT_REACHED = -32000
#: A valid base58 public key that no ledger transaction mentions.
UNKNOWN_ADDRESS = "SysvarC1ock11111111111111111111111111111111"

Hostile = Callable[[trio.Nursery, str, trio.Event], Awaitable[None]]


@pytest.fixture
async def srv() -> AsyncIterator[LocalServer]:
    """A memory-only server with two keys and a small subscription limit."""
    config = ServerConfig(
        api_keys=(SECRET_KEY, HOSTILE_KEY),
        tcp=False,
        ledger=LedgerConfig(seed=7),
        max_subscriptions_per_socket=SUB_LIMIT,
    )
    async with open_server(config) as server:
        yield server


async def _good_session(
    srv: LocalServer,
    start: int,
    end: int,
    *,
    created: Callable[[str], None] = lambda _: None,
    gate: trio.Event | None = None,
) -> str:
    """Run one managed session over ``[start, end]``; check it got exactly the ledger's share."""
    program = srv.ledger.programs[0]
    create = CreateSession(start_slot=start, end_slot=end)
    async with open_backtest_session(
        srv.url, SECRET_KEY, create, connector=srv.connector()
    ) as session:
        await session.subscribe_transactions([program])
        session_id = session.info.session_id
        created(session_id)
        if gate is not None:
            await gate.wait()
        events = await drive(session, stride=5)
    assert isinstance(events[-1], Completed)
    assert signatures(events) == expected_transactions(srv, [program], start, end)
    assert srv.executed_slots(session_id) == list(range(start, end + 1))
    return session_id


async def _still_up(srv: LocalServer) -> None:
    """A new session can be created and run to completion afterwards."""
    with trio.fail_after(30):
        await _good_session(srv, 900, 904)


async def _alongside(
    srv: LocalServer, hostile: Hostile, start: int = 300, end: int = 359
) -> tuple[str, ServerStatistics]:
    """Run ``hostile(nursery, good_session_id, gate)`` next to a good session; check both ends.

    The good session executes once ``gate`` opens: ``hostile`` opens it when its clients are
    in position (it is opened anyway when ``hostile`` returns). Whatever ``hostile`` leaves
    running in ``nursery`` is cancelled once the good session is done.

    Returns:
        The good session's id and the server's statistics the moment it was done.
    """
    ids: list[str] = []
    have_id = trio.Event()
    gate = trio.Event()
    at_done: list[ServerStatistics] = []

    def created(session_id: str) -> None:
        ids.append(session_id)
        have_id.set()

    async def good() -> None:
        await _good_session(srv, start, end, created=created, gate=gate)
        at_done.append(srv.statistics())

    async with trio.open_nursery() as nursery:
        with trio.fail_after(60):
            async with trio.open_nursery() as good_nursery:
                good_nursery.start_soon(good)
                await have_id.wait()
                await hostile(nursery, ids[0], gate)
                gate.set()
        nursery.cancel_scope.cancel()
    await _still_up(srv)
    return ids[0], at_done[0]


async def _drop(ws: trio_websocket.WebSocketConnection) -> None:
    """Lose the connection without a close frame, as a crashed client does."""
    # trio-websocket has no public abort; closing its stream is what a dead peer looks like.
    await trio.aclose_forcefully(ws._stream)


async def _expect_invalid_request(control: Control, fragment: str = "") -> None:
    answer = (await control.recv()).message
    assert isinstance(answer, ServerError), answer
    assert isinstance(answer.error, InvalidRequest), answer
    assert fragment in answer.error.error


# ---------------------------------------------------------------- 1. a crowd at once

_GARBAGE = [
    "{not json",
    "[1, 2, 3]",
    '"just a string"',
    "null",
    '{"method": "makeMeASandwich"}',
    '{"method": "readyForContinue"}',
    '{"params": {"startSlot": 1}}',
    '{"method": 42}',
    '{"method": "createBacktestSession", "params": "everything"}',
    "\u0000\u0001\u0002",
    "{not json either",  # the eleventh: over the limit
]


def _create_frame(params: object) -> str:
    return json.dumps({"method": "createBacktestSession", "params": params})


_OK = {"startSlot": 1, "endSlot": 20}

#: Creates with wrong types: decode errors, each counted as a malformed frame.
_WRONG_TYPES = [
    (_create_frame({"startSlot": "ten", "endSlot": 20}), "startSlot"),
    (_create_frame({"startSlot": 1, "endSlot": None}), "endSlot"),
    (_create_frame({"startSlot": 1.5, "endSlot": 20}), "startSlot"),
    (_create_frame([1, 20]), ""),
    (_create_frame({**_OK, "sendSummary": "yes"}), "sendSummary"),
    (_create_frame({**_OK, "disconnectTimeoutSecs": "5"}), "disconnectTimeoutSecs"),
    (_create_frame({**_OK, "discoveries": 7}), "discoveries"),
    (_create_frame({**_OK, "parallel": "true"}), "parallel"),
    # Slots are unsigned 64-bit integers (protocol.md §7): a negative one is a wrong type.
    (_create_frame({"startSlot": -1, "endSlot": 20}), "startSlot"),
]
#: Creates with well-typed but bad values: the server's own checks.
_BAD_VALUES = [
    (_create_frame({"startSlot": 30, "endSlot": 20}), "endSlot"),
    (_create_frame({**_OK, "disconnectTimeoutSecs": 901}), "disconnectTimeoutSecs"),
    (_create_frame({**_OK, "parallel": True}), "parallel"),
]

CROWD = 200
KINDS = ("idle", "garbage", "wrong-types", "abandon", "abrupt")


async def test_a_crowd_of_hostile_control_connections(
    srv: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    connected = 0
    all_connected = trio.Event()
    outcomes: dict[str, int] = dict.fromkeys(KINDS, 0)
    created_ids: list[str] = []
    per_kind = CROWD // len(KINDS)
    acted = 0
    all_acted = trio.Event()

    async def one(index: int, gate: trio.Event) -> None:
        nonlocal connected, acted
        kind = KINDS[index % len(KINDS)]
        async with trio.open_nursery() as own:
            control = await open_control(srv, own, key=HOSTILE_KEY)
            connected += 1
            if connected == CROWD:
                all_connected.set()
            await gate.wait()
            if kind == "idle":
                outcomes[kind] += 1
                try:
                    await trio.sleep_forever()
                finally:
                    # A cancelled client closes nothing by itself; vanish as a dead one does.
                    await _drop(control.ws)
            elif kind == "garbage":
                for frame in _GARBAGE:
                    await control.send(frame)
                answers = 0
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        await _expect_invalid_request(control)
                        answers += 1
                assert answers == 10
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1008
            elif kind == "wrong-types":
                for frame, fragment in _WRONG_TYPES + _BAD_VALUES:
                    await control.send(frame)
                    await _expect_invalid_request(control, fragment)
                # Still open and still answering: a request that needs a session.
                await control.send('{"method": "continue", "params": {"advanceCount": 1}}')
                await _expect_invalid_request(control, "no session")
                await control.ws.aclose()
            elif kind == "abandon":
                resumable = index % 2 == 0
                created = await control.create(
                    CreateSession(
                        start_slot=10 + index,
                        slot_count=20,
                        disconnect_timeout_secs=3 if resumable else None,
                    )
                )
                created_ids.append(created.session_id)
                if index % 3 == 0:
                    await _drop(control.ws)
                else:
                    # A polite WebSocket close, but the session is never closed.
                    await control.ws.aclose()
            else:
                if index % 2 == 0:
                    # Half a frame header, then gone.
                    await control.ws._stream.send_all(b"\x81\xfe\x01")
                await _drop(control.ws)
            outcomes[kind] += 1
            acted += 1
            if acted == CROWD - per_kind:
                all_acted.set()
            own.cancel_scope.cancel()

    async def hostile(nursery: trio.Nursery, good_id: str, gate: trio.Event) -> None:
        for index in range(CROWD):
            nursery.start_soon(one, index, gate)
        with trio.fail_after(30):
            await all_connected.wait()
        assert srv.statistics().connections_open["control"] >= CROWD
        gate.set()
        # Let the crowd act out while the good session runs.
        with trio.fail_after(30):
            await all_acted.wait()

    _, at_done = await _alongside(srv, hostile)
    # The idle ones were all still connected when the good session was done.
    assert at_done.connections_open["control"] >= per_kind
    assert outcomes == dict.fromkeys(KINDS, per_kind)
    assert len(created_ids) == per_kind
    # Abandoned sessions go: the plain ones with their socket, resumable ones at expiry.
    await trio.sleep(10)
    assert not set(created_ids) & set(srv.session_ids())
    stats = srv.statistics()
    assert stats.sessions_created == per_kind + 2  # and the good one, and the proof of life
    assert stats.sessions_closed == 2
    assert stats.sessions_expired == per_kind // 2
    assert stats.sessions_destroyed == per_kind // 2
    assert stats.protocol_errors == per_kind * (len(_GARBAGE) + len(_WRONG_TYPES))
    assert stats.connections_open.get("control", 0) == 0
    assert stats.connections_open.get("data", 0) == 0


# ---------------------------------------------------------------- 2. other people's sessions


def _attach(session_id: str) -> str:
    return orjson.dumps(
        {
            "method": "attachBacktestSession",
            "params": {"session_id": session_id, "last_sequence": None},
        }
    ).decode()


def _near_miss(session_id: str) -> str:
    """``session_id`` with its last character changed."""
    return session_id[:-1] + ("B" if session_id.endswith("A") else "A")


_GUESSES = [
    "",
    "x",
    "../" * 10,
    "%2e%2e",
    "💥" * 8,
    "a" * 10_000,
]


async def test_attaching_to_other_sessions_and_guessed_ids(
    srv: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    rounds = 20
    attempts = {"mismatch": 0, "gone": 0, "not-found": 0, "404": 0}

    async def thief(control: Control, good_id: str, gate: trio.Event) -> None:
        await gate.wait()
        for n in range(rounds):
            # The good session may finish meanwhile; then its id is simply unknown.
            await control.send(_attach(good_id))
            answer = (await control.recv()).message
            assert isinstance(answer, ServerError)
            if isinstance(answer.error, SessionOwnerMismatch):
                attempts["mismatch"] += 1
            else:
                assert answer.error == SessionNotFound(session_id=good_id)
                assert srv.session_state(good_id) is None
                attempts["gone"] += 1
            guess = secrets.token_urlsafe(16) if n % 2 else _near_miss(good_id)
            await control.send(_attach(guess))
            answer = (await control.recv()).message
            assert answer == ServerError(SessionNotFound(session_id=guess))
            attempts["not-found"] += 1

    async def prober(gate: trio.Event) -> None:
        await gate.wait()
        async with trio.open_nursery() as own:
            for _ in range(rounds):
                guess = secrets.token_urlsafe(16)
                with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                    await connect(srv, own, f"/backtest/{guess}", key=None)
                assert rejected.value.status_code == 404
                attempts["404"] += 1
            own.cancel_scope.cancel()

    async def hostile(nursery: trio.Nursery, good_id: str, gate: trio.Event) -> None:
        controls = [await open_control(srv, nursery, key=HOSTILE_KEY) for _ in range(5)]
        # Before the gate the good session surely lives: another key's id is a mismatch.
        first = controls[0]
        await first.send(_attach(good_id))
        assert (await first.recv()).message == ServerError(SessionOwnerMismatch())
        await first.send(
            orjson.dumps(
                {
                    "method": "attachParallelControlSessionV2",
                    "params": {"control_session_id": good_id, "last_sequences": {}},
                }
            ).decode()
        )
        assert (await first.recv()).message == ServerError(SessionNotFound(session_id=good_id))
        for guess in _GUESSES:
            await first.send(_attach(guess))
            assert (await first.recv()).message == ServerError(SessionNotFound(session_id=guess))
        # Data-plane upgrades to near misses of the real id.
        for path in (_near_miss(good_id), good_id + "x", good_id[:-1], f"{good_id}/x", ".."):
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                await connect(srv, nursery, f"/backtest/{path}", key=None)
            assert rejected.value.status_code == 404
        async with trio.open_nursery() as crowd:
            for control in controls:
                crowd.start_soon(thief, control, good_id, gate)
            crowd.start_soon(prober, gate)
            gate.set()
        # After all that, the sockets still answer: final errors, not final connections.
        for control in controls:
            await control.send(_attach(secrets.token_urlsafe(16)))
            answer = (await control.recv()).message
            assert isinstance(answer, ServerError)
            assert isinstance(answer.error, SessionNotFound)

    await _alongside(srv, hostile)
    # Every try on the good id met a mismatch, or "not found" once the session was closed.
    assert attempts["mismatch"] + attempts["gone"] == 5 * rounds
    assert attempts["not-found"] == 5 * rounds
    assert attempts["404"] == rounds
    stats = srv.statistics()
    assert stats.upgrades_refused == {"404": 25}
    assert stats.sessions_created == 2  # the good one and the one proving the server is up


# ---------------------------------------------------------------- 3. data-plane nonsense


def _rpc(method: str, params: object, rpc_id: object = 7) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": params})


_TX = "transactionSubscribe"
_DIFF = "accountDiffSubscribe"

#: (name, frame, expected): an error code, or "ack" for an accepted subscription.
_NONSENSE: list[tuple[str, str, int | str]] = [
    ("unknown-address", _rpc(_TX, [UNKNOWN_ADDRESS, {}]), "ack"),
    ("unknown-account", _rpc(_DIFF, [UNKNOWN_ADDRESS, {"address_type": "account"}]), "ack"),
    ("not-base58", _rpc(_TX, ["0OIl" * 8, {}]), INVALID_PARAMS),
    ("short-key", _rpc(_TX, ["1111", {}]), INVALID_PARAMS),
    ("address-only", _rpc(_TX, [UNKNOWN_ADDRESS]), "ack"),
    ("address-int", _rpc(_TX, [42, {}]), INVALID_PARAMS),
    ("address-null", _rpc(_TX, [None, {}]), INVALID_PARAMS),
    ("params-string", _rpc(_TX, "x"), INVALID_PARAMS),
    ("params-empty", _rpc(_TX, []), INVALID_PARAMS),
    ("params-null", _rpc(_TX, None), INVALID_PARAMS),
    ("params-long", _rpc(_TX, [UNKNOWN_ADDRESS, {}, 3]), INVALID_PARAMS),
    ("id-string", _rpc(_TX, [UNKNOWN_ADDRESS, {}], rpc_id="seven"), INVALID_PARAMS),
    ("params-object", _rpc(_TX, {"programId": 1}), INVALID_PARAMS),
    ("config-string", _rpc(_TX, [UNKNOWN_ADDRESS, "cfg"]), INVALID_PARAMS),
    ("address-type", _rpc(_DIFF, [UNKNOWN_ADDRESS, {"address_type": "galaxy"}]), INVALID_PARAMS),
    ("address-type-int", _rpc(_DIFF, [UNKNOWN_ADDRESS, {"address_type": 3}]), INVALID_PARAMS),
    ("compression", _rpc(_TX, [UNKNOWN_ADDRESS, {"compression": "lz4"}]), INVALID_PARAMS),
    ("replay-negative", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": -1}]), INVALID_PARAMS),
    ("replay-string", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": "10"}]), INVALID_PARAMS),
    ("replay-float", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": 1.5}]), INVALID_PARAMS),
    ("replay-bool", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": True}]), INVALID_PARAMS),
    ("replay-list", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": [1]}]), INVALID_PARAMS),
    ("replay-huge", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": 10**15}]), "ack"),
    ("replay-beyond-u64", _rpc(_TX, [UNKNOWN_ADDRESS, {"replayFromSlot": 10**30}]), INVALID_PARAMS),
    ("unknown-method", _rpc("slotSubscribe", []), METHOD_NOT_FOUND),
    ("empty-method", _rpc("", []), METHOD_NOT_FOUND),
    ("unsubscribe-unknown", _rpc("transactionUnsubscribe", [99_999]), INVALID_PARAMS),
    ("unsubscribe-string", _rpc("transactionUnsubscribe", ["1"]), INVALID_PARAMS),
    ("not-json", "{nope", PARSE_ERROR),
    ("batch", json.dumps([json.loads(_rpc(_TX, [UNKNOWN_ADDRESS, {}]))]), INVALID_REQUEST),
    ("response", '{"jsonrpc": "2.0", "id": 7, "result": 1}', INVALID_REQUEST),
]


_OTHER_UNSUBSCRIBE = {
    "transactionUnsubscribe": "accountDiffUnsubscribe",
    "accountDiffUnsubscribe": "transactionUnsubscribe",
}


async def _answer(data: Data) -> RpcResult | RpcError:
    answer = await data.recv()
    assert isinstance(answer, RpcResult | RpcError), answer
    return answer


async def _talk_nonsense(data: Data) -> list[tuple[str, int]]:
    """Send every frame of ``_NONSENSE``, check each answer; the subscriptions made.

    Each subscription comes as ``(its unsubscribe method, id)``.
    """
    acked: list[tuple[str, int]] = []
    for name, frame, expected in _NONSENSE:
        await data.ws.send_message(frame)
        answer = await _answer(data)
        if expected == "ack":
            assert isinstance(answer, RpcResult), (name, answer)
            assert isinstance(answer.result, int)
            method = json.loads(frame)["method"].replace("Subscribe", "Unsubscribe")
            acked.append((method, answer.result))
        else:
            assert isinstance(answer, RpcError), (name, answer)
            assert answer.code == expected, (name, answer)
            if expected not in (PARSE_ERROR, INVALID_REQUEST):
                # The request's id is echoed, even one of the wrong type.
                assert answer.id == json.loads(frame)["id"], (name, answer)
    return acked


async def _over_the_limit(data: Data, held: int) -> None:
    """Fill the socket's subscriptions, go one over, free one, subscribe again."""
    ids = [await data.subscribe(_TX, UNKNOWN_ADDRESS) for _ in range(SUB_LIMIT - held)]
    await data.ws.send_message(_rpc(_TX, [UNKNOWN_ADDRESS, {}], rpc_id=4242))
    answer = await _answer(data)
    assert isinstance(answer, RpcError)
    assert (answer.code, answer.id) == (LIMIT_REACHED, 4242)
    assert "too many subscriptions" in answer.message
    await data.ws.send_message(_rpc("transactionUnsubscribe", [ids[-1]]))
    answer = await _answer(data)
    assert isinstance(answer, RpcResult)
    assert answer.result is True
    await data.subscribe(_TX, UNKNOWN_ADDRESS)


async def test_nonsense_on_a_real_session_data_plane(
    srv: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = srv.ledger.programs[0]
    on_good: list[Data] = []
    closes: list[int | None] = []
    own_start = 50

    async def pester(data: Data) -> None:
        """Keep asking nonsense on the good session's data plane until it is closed."""
        try:
            while True:
                for _ in range(5):
                    await data.ws.send_message(_rpc("slotSubscribe", []))
                for _ in range(5):
                    answer = await _answer(data)
                    assert isinstance(answer, RpcError)
                    assert answer.code == METHOD_NOT_FOUND
                # A pause, or the autojump clock could never advance past this loop.
                await trio.sleep(0.001)
        except trio_websocket.ConnectionClosed as exc:
            closes.append(None if exc.reason is None else exc.reason.code)

    async def on_own_session(gate: trio.Event) -> None:
        """The same nonsense on a session of the hostile key, then a replay that must work."""
        async with trio.open_nursery() as own:
            control = await open_control(srv, own, key=HOSTILE_KEY)
            created = await control.create(CreateSession(start_slot=own_start, slot_count=9))
            await control.recv_until(ReadyForContinue)
            await control.send('{"method": "continue", "params": {"advanceCount": 3}}')
            await control.recv_until(ReadyForContinue)
            data = await open_data(srv, own, created.session_id)
            await gate.wait()
            acked = await _talk_nonsense(data)
            await _over_the_limit(data, len(acked))
            # Still usable: free a place and replay what the session executed.
            for method, sub in acked:
                # The other kind's unsubscribe does not know it; its own does.
                other = _OTHER_UNSUBSCRIBE[method]
                await data.ws.send_message(_rpc(other, [sub]))
                wrong = await _answer(data)
                assert isinstance(wrong, RpcError)
                assert wrong.code == INVALID_PARAMS
                await data.ws.send_message(_rpc(method, [sub]))
                assert await _answer(data) == RpcResult(7, True)
            # A replay from far ahead of the session replays nothing.
            await data.subscribe(_TX, program, replayFromSlot=10**15)
            assert await data.drain(idle=1.0) == []
            await data.subscribe(_TX, program, replayFromSlot=own_start)
            replayed = notification_signatures(await data.drain(idle=1.0))
            assert replayed == signatures_for(srv, program, own_start, own_start + 2)
            own.cancel_scope.cancel()

    async def hostile(nursery: trio.Nursery, good_id: str, gate: trio.Event) -> None:
        # On the good session's own data plane, while it is live (and held at the gate).
        for _ in range(3):
            data = await open_data(srv, nursery, good_id)
            acked = await _talk_nonsense(data)
            await _over_the_limit(data, len(acked))
            on_good.append(data)
        async with trio.open_nursery() as crowd:
            crowd.start_soon(on_own_session, gate)
            for data in on_good:
                crowd.start_soon(pester, data)
            gate.set()

    await _alongside(srv, hostile)
    # The hostile sockets on the good data plane ended with the session, normally, and their
    # unknown-address subscriptions never saw a notification.
    assert closes == [1000] * 3
    for data in on_good:
        kinds = {type(decode_rpc(frame)).__name__ for frame in data.frames}
        assert kinds <= {"RpcResult", "RpcError"}, kinds


# ---------------------------------------------------------------- 4. wrong keys


def _wrong_headers(n: int) -> list[tuple[str, str]]:
    keys = [
        f"sk-wrong-{n}",
        "",
        SECRET_KEY + "x",
        SECRET_KEY[:-1],
        SECRET_KEY.upper(),
        HOSTILE_KEY[::-1],
    ]
    choice = n % (len(keys) + 2)
    if choice == len(keys):
        return []
    if choice == len(keys) + 1:
        return [("Authorization", f"Bearer sk-wrong-{n}")]
    return [("X-API-Key", keys[choice])]


async def test_a_burst_of_wrong_api_keys(
    srv: LocalServer, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    burst = 150
    refused: list[int] = []

    async def knock(n: int, gate: trio.Event) -> None:
        await gate.wait()
        async with trio.open_nursery() as own:
            connect_fn = srv.connector()
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                await connect_fn(
                    own,
                    srv.url,
                    headers=_wrong_headers(n),
                    max_message_size=1 << 20,
                )
            refused.append(rejected.value.status_code)

    async def hostile(nursery: trio.Nursery, good_id: str, gate: trio.Event) -> None:
        async with trio.open_nursery() as crowd:
            for n in range(burst):
                crowd.start_soon(knock, n, gate)
            gate.set()

    await _alongside(srv, hostile)
    assert refused == [401] * burst
    stats = srv.statistics()
    assert stats.upgrades_refused == {"401": burst}
    assert stats.sessions_created == 2
    for record in caplog.records:
        assert "sk-wrong-" not in record.getMessage()
