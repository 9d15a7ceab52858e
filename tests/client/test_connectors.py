"""Both connectors, trio-websocket and websockets 17, pass the same suite.

Every test runs once per ``ClientConfig.transport`` against the local server over real
loopback TCP (and a TLS listener made with trustme), through `connect`, the one door
the managers use. Real sockets mean real time: tests are bounded by ``fail_after``
and assert causes, never durations.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import sys
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trustme

from tests.client.helpers import drive, expected_transactions, signatures
from tests.conftest import SECRET_KEY
from tests.reliability.test_tls import open_tls_server
from trio_backtest import ClientConfig, Completed, CreateSession, open_backtest_session
from trio_backtest._connectors import default_connector
from trio_backtest._plumbing import Counters
from trio_backtest._policy import CauseKind, DisconnectCause
from trio_backtest._transport import Dead, Link, WebSocket, connect, resolve_rpc_endpoint
from trio_backtest.protocol import (
    Continue,
    ContinueParams,
    CreateBacktestSession,
    RpcResult,
    SessionCreated,
    TransactionSubscribe,
    decode_control,
    decode_rpc,
    encode_control,
    encode_rpc,
)
from trio_backtest.protocol import (
    ReadyForContinue as Ready,
)
from trio_backtest.server import LocalServer, open_local_server

#: Generous for loopback; a hang guard, not a speed claim.
BOUND = 20.0
KEY_HEADER = [("X-API-Key", SECRET_KEY)]


@pytest.fixture(params=["trio-websocket", "websockets"])
def config(request: pytest.FixtureRequest) -> ClientConfig:
    return ClientConfig(transport=request.param)


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    """A local server listening on loopback TCP."""
    async with open_local_server(api_keys=(SECRET_KEY,), seed=7) as srv:
        yield srv


async def open_control(
    nursery: trio.Nursery, url: str, config: ClientConfig, headers: list[tuple[str, str]]
) -> WebSocket:
    return await connect(default_connector(config), nursery, url, config, headers)


async def send_create(ws: WebSocket) -> None:
    """Ask for a one-slot session; the server answers on the control socket."""
    await ws.send(encode_control(CreateBacktestSession(CreateSession(start_slot=0, slot_count=1))))


async def cause_of_receive(ws: WebSocket) -> DisconnectCause:
    with pytest.raises(Dead) as info:
        while True:
            await ws.receive()
    return info.value.cause


async def test_a_managed_session_streams_over_the_connector(
    server: LocalServer, config: ClientConfig
) -> None:
    programs = server.ledger.programs
    create = CreateSession(start_slot=0, slot_count=12, disconnect_timeout_secs=30)
    with trio.fail_after(BOUND):
        async with open_backtest_session(server.url, SECRET_KEY, create, config=config) as session:
            await session.subscribe_transactions(programs)
            events = await drive(session, stride=5)
    assert isinstance(events[-1], Completed)
    assert signatures(events) == expected_transactions(server, programs, 0, 12)
    assert set(session.statistics().reconnects.values()) == {0}


async def test_the_key_travels_only_in_the_control_upgrade(
    server: LocalServer, config: ClientConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # Every byte the client sends passes a recording proxy. DEBUG logging is on (the
    # suite-wide fixture): websockets would log the upgrade's headers if let.
    create = CreateSession(start_slot=0, slot_count=2, disconnect_timeout_secs=30)
    with trio.fail_after(BOUND):
        async with (
            open_tap(server.url) as (url, sent),
            open_backtest_session(url, SECRET_KEY, create, config=config) as session,
        ):
            handle = await session.subscribe_transactions(server.ledger.programs[:2])
            link = session._control._link
            assert link is not None
            texts = [repr(session), repr(handle), repr(link.ws), repr(session.statistics())]
            await drive(session)
    key = SECRET_KEY.encode()
    control = [b for b in sent if b.startswith(b"GET /backtest HTTP/1.1")]
    data = [b for b in sent if b.startswith(b"GET /backtest/")]
    assert len(control) == 1
    assert len(data) == 1
    head, _, frames = control[0].partition(b"\r\n\r\n")
    assert head.count(key) == 1
    assert key not in frames
    assert key not in data[0]
    assert not [text for text in texts if SECRET_KEY in text]
    records = caplog.get_records("call")
    assert any(r.name.startswith("trio_backtest") for r in records)
    assert not [r.name for r in records if SECRET_KEY in r.getMessage()]


@asynccontextmanager
async def open_tap(url: str) -> AsyncIterator[tuple[str, list[bytearray]]]:
    """A TCP proxy in front of ``url``'s port; yields its URL and, per connection, every
    byte the client sent."""
    target = urllib.parse.urlsplit(url)
    sent: list[bytearray] = []

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, tap: bytearray) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for chunk in source:
                tap += chunk
                await sink.send_all(chunk)
        await trio.aclose_forcefully(sink)

    async def handler(client: trio.SocketStream) -> None:
        sent.append(bytearray())
        upstream = await trio.open_tcp_stream(target.hostname or "", target.port or 80)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, upstream, sent[-1])
            nursery.start_soon(pump, upstream, client, bytearray())

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, [listener])
        yield target._replace(netloc=f"127.0.0.1:{port}").geturl(), sent
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1000, 1001, 1011, 1013, 4404])
async def test_close_codes_become_causes(
    server: LocalServer, config: ClientConfig, code: int
) -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            ws = await open_control(nursery, server.url, config, KEY_HEADER)
            await send_create(ws)
            await ws.receive()  # the server has the socket by now
            assert server.faults.close("control", code, reason="test") == 1
            cause = await cause_of_receive(ws)
            await ws.abort()
    assert cause == DisconnectCause(CauseKind.CLOSED, code=code, detail="test")


async def test_a_lost_connection_is_an_abnormal_closure(
    server: LocalServer, config: ClientConfig
) -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            ws = await open_control(nursery, server.url, config, KEY_HEADER)
            await send_create(ws)
            await ws.receive()
            assert server.faults.drop("control") == 1
            cause = await cause_of_receive(ws)
            await ws.abort()
    assert (cause.kind, cause.code) == (CauseKind.CLOSED, 1006)


async def test_an_oversize_inbound_message_is_a_1009_cause(
    server: LocalServer, config: ClientConfig
) -> None:
    small = attrs.evolve(config, max_message_size=32)  # sessionCreated is longer
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            ws = await open_control(nursery, server.url, small, KEY_HEADER)
            await send_create(ws)
            cause = await cause_of_receive(ws)
            await ws.abort()
    assert cause.kind is CauseKind.OVERSIZE


@pytest.mark.parametrize(("status", "key"), [(401, "wrong-key"), (401, None), (503, SECRET_KEY)])
async def test_refused_upgrades_become_http_causes(
    server: LocalServer, config: ClientConfig, status: int, key: str | None
) -> None:
    if status == 503:
        server.faults.refuse_upgrades(1, 503)
    headers = [] if key is None else [("X-API-Key", key)]
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            with pytest.raises(Dead) as info:
                await open_control(nursery, server.url, config, headers)
    assert info.value.cause == DisconnectCause.http_status(status)


async def test_an_unknown_data_plane_is_refused_with_404(
    server: LocalServer, config: ClientConfig
) -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            with pytest.raises(Dead) as info:
                await open_control(nursery, server.url + "/no-such-session", config, [])
    assert info.value.cause == DisconnectCause.http_status(404)


async def test_nothing_listening_is_a_connect_failure(config: ClientConfig) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # the port is free again: the connect is refused
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            with pytest.raises(Dead) as info:
                await open_control(nursery, f"ws://127.0.0.1:{port}/backtest", config, [])
    assert info.value.cause.kind is CauseKind.CONNECT_FAILED


async def test_a_black_holed_connection_is_declared_dead(
    server: LocalServer, config: ClientConfig
) -> None:
    short = attrs.evolve(config, keepalive_interval=0.1, keepalive_miss_deadline=0.8)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            ws = await open_control(nursery, server.url, short, KEY_HEADER)
            link = Link(ws, short, 1, Counters())
            nursery.start_soon(link.keepalive, nursery)
            # Silent but answering pings: alive, however long nothing else comes.
            with trio.move_on_after(2 * short.keepalive_miss_deadline) as idle:
                await link.receive()
            assert idle.cancelled_caught
            # A hole longer than the deadline; ending it lets the server shut down at once.
            hole = 2 * short.keepalive_miss_deadline
            assert server.faults.black_hole("control", duration=hole) == 1
            with pytest.raises(Dead) as info:
                await link.receive()
            await ws.abort()
            nursery.cancel_scope.cancel()
    assert info.value.cause == DisconnectCause.keepalive()


async def test_a_slow_consumer_stops_the_server(
    config: ClientConfig, caplog: pytest.LogCaptureFixture
) -> None:
    # A small server queue and busy slots: notifications nobody reads must hold the
    # server back (the connector stops reading its socket), not pile up in the client.
    caplog.set_level(logging.INFO, logger="trio-websocket")  # a record per frame is slow
    slots = 8  # about 5 MB of notifications: more than every buffer on the way holds
    async with open_local_server(
        api_keys=(SECRET_KEY,), seed=7, queue_size=8, transactions_per_slot=200.0
    ) as server:
        programs = server.ledger.programs
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                control = await open_control(nursery, server.url, config, KEY_HEADER)
                params = CreateSession(start_slot=0, slot_count=slots - 1)
                await control.send(encode_control(CreateBacktestSession(params)))
                created = decode_control(await control.receive()).message
                assert isinstance(created, SessionCreated)
                url = resolve_rpc_endpoint(server.url, created.rpc_endpoint)
                data = await open_control(nursery, url, config, [])
                for n, program in enumerate(programs, start=1):
                    await data.send(encode_rpc(TransactionSubscribe(n, program)))
                for _ in programs:
                    assert isinstance(decode_rpc(await data.receive()), RpcResult)
                while not isinstance(decode_control(await control.receive()).message, Ready):
                    pass
                await control.send(encode_control(Continue(ContinueParams(slots))))
                executed = await _until_still(server, created.session_id)
                assert executed < slots
                received = 0
                with pytest.raises(Dead):  # closed with 1000 once the session completed
                    while True:
                        await data.receive()
                        received += 1
                for ws in (control, data):
                    await ws.abort()
                # trio-websocket's reader task waits for room in its full queue (the
                # control socket's) until its nursery ends; the managers end theirs so.
                nursery.cancel_scope.cancel()
        assert server.executed_slots(created.session_id) == list(range(slots))
    expected = sum(len(expected_transactions(server, [p], 0, slots - 1)) for p in programs)
    assert received == expected


async def _until_still(server: LocalServer, session_id: str) -> int:
    """Wait until the server has executed no new slot for a while; how many it executed."""
    executed = len(server.executed_slots(session_id))
    while True:
        await trio.sleep(0.5)
        now = len(server.executed_slots(session_id))
        if now == executed:
            return now
        executed = now


async def test_tls_is_verified(ca: trustme.CA, config: ClientConfig) -> None:
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with open_tls_server(ca) as (_server, url):
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                good = attrs.evolve(config, ssl_context=trusting)
                ws = await open_control(nursery, url, good, KEY_HEADER)
                await send_create(ws)
                assert isinstance(decode_control(await ws.receive()).message, SessionCreated)
                await ws.aclose()
                await ws.abort()
            # The default context does not know the test CA: refused at the first try.
            async with trio.open_nursery() as nursery:
                with pytest.raises(Dead) as info:
                    await open_control(nursery, url, config, KEY_HEADER)
    # A failed TLS handshake is its own, final kind (not retried: no retry fixes it).
    assert info.value.cause.kind is CauseKind.TLS
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.cause.detail


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_an_explicit_connector_wins_over_transport(autojump_clock: trio.abc.Clock) -> None:
    # No TCP listener: only the in-memory connector can reach this server.
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=7) as server:
        programs = server.ledger.programs[:1]
        create = CreateSession(start_slot=0, slot_count=3)
        async with open_backtest_session(
            server.url,
            SECRET_KEY,
            create,
            config=ClientConfig(transport="websockets"),
            connector=server.connector(),
        ) as session:
            await session.subscribe_transactions(programs)
            events = await drive(session)
    assert signatures(events) == expected_transactions(server, programs, 0, 3)


def test_transport_is_validated() -> None:
    with pytest.raises(ValueError, match="transport"):
        ClientConfig(transport="aiohttp")  # type: ignore[arg-type]
    assert ClientConfig().transport == "trio-websocket"


def test_a_missing_websockets_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "trio_backtest._websockets", raising=False)
    monkeypatch.setitem(sys.modules, "websockets.trio.client", None)
    with pytest.raises(ImportError, match=r"trio-backtest\[websockets\]"):
        default_connector(ClientConfig(transport="websockets"))
