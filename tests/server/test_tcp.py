"""The real TCP path: loopback sockets, plain HTTP answers, a whole session."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator

import pytest
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from tests.server.wire import (
    Control,
    Data,
    expected_summary,
    notification_signatures,
    signatures_for,
    tcp_websocket,
)
from trio_backtest.protocol import Completed, CreateSession, ReadyForContinue, Success
from trio_backtest.server import LocalServer, open_local_server


async def http_get(server: LocalServer, request: bytes, *, head_only: bool = False) -> bytes:
    """Send a raw HTTP request to the server's TCP port; everything it answers (or its head)."""
    host, port = server.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = bytearray()
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                answer += chunk
                if head_only and b"\r\n\r\n" in answer:
                    break
    return bytes(answer)


@pytest.fixture
async def tcp_server() -> AsyncIterator[LocalServer]:
    """A server on a free loopback port."""
    async with open_local_server(api_keys=(SECRET_KEY,), seed=9) as server:
        yield server


async def test_health_and_plain_http_answers(tcp_server: LocalServer) -> None:
    assert tcp_server.url.startswith("ws://127.0.0.1:")
    ok = await http_get(tcp_server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")
    assert ok.endswith(b"\r\n\r\nok")
    assert (await http_get(tcp_server, b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 405 "
    )
    assert (await http_get(tcp_server, b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 404 "
    )
    assert (await http_get(tcp_server, b"GET /backtest HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 426 "
    )
    assert (await http_get(tcp_server, b"\x16\x03\x01 not http at all\r\n\r\n")).startswith(
        b"HTTP/1.1 400 "
    )
    assert tcp_server.statistics().health_checks == 1


async def test_a_whole_session_over_loopback_tcp(tcp_server: LocalServer) -> None:
    program = tcp_server.ledger.programs[0]
    with trio.fail_after(30):
        async with tcp_websocket(tcp_server.url, [(b"X-API-Key", SECRET_KEY.encode())]) as ws:
            control = Control(ws)
            created = await control.create(
                CreateSession(start_slot=20, end_slot=29, send_summary=True)
            )
            data_url = tcp_server.url.rsplit("/backtest", 1)[0] + created.rpc_endpoint
            async with tcp_websocket(data_url) as data_ws:
                data = Data(data_ws)
                await data.subscribe("accountDiffSubscribe", program, address_type="program")
                await data.subscribe("transactionSubscribe", program, compression="zstd")
                await data.subscribe("transactionSubscribe", program)
                async with trio.open_nursery() as nursery:
                    data.collect(nursery)
                    await control.recv_until(ReadyForContinue)
                    await control.send('{"method": "continue", "params": {"advanceCount": 10}}')
                    completed = (await control.recv_until(Completed))[-1].message
                    await data.closed.wait()
            assert isinstance(completed, Completed)
            assert completed.summary == expected_summary(tcp_server, 20, 29)
            frames = data.take()
            plain = [f for f in frames if isinstance(f, str)]
            assert (
                notification_signatures(plain)[-1]
                == signatures_for(tcp_server, program, 20, 29)[-1]
            )
            assert sum(isinstance(f, bytes) for f in frames) == len(
                signatures_for(tcp_server, program, 20, 29)
            )
            assert data.close_code == 1000
            await control.send('{"method": "closeBacktestSession"}')
            assert (await control.recv_until(Success))[-1].message == Success()


_UPGRADE = (
    b"GET /backtest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


async def test_tcp_refuses_a_missing_or_wrong_key_before_the_upgrade(
    tcp_server: LocalServer,
) -> None:
    # Raw HTTP: trio-websocket's own client leaks its socket when an upgrade is refused.
    missing = await http_get(tcp_server, _UPGRADE + b"\r\n")
    assert missing.startswith(b"HTTP/1.1 401 ")
    wrong = await http_get(tcp_server, _UPGRADE + b"X-API-Key: nope\r\n\r\n")
    assert wrong.startswith(b"HTTP/1.1 401 ")
    right = await http_get(
        tcp_server, _UPGRADE + f"X-API-Key: {SECRET_KEY}\r\n\r\n".encode(), head_only=True
    )
    assert right.startswith(b"HTTP/1.1 101 ")


async def test_closing_the_server_closes_its_sockets_with_1001() -> None:
    async with trio.open_nursery() as nursery:
        async with open_local_server(api_keys=(SECRET_KEY,)) as server:
            parts = urllib.parse.urlsplit(server.url)
            assert parts.hostname is not None
            assert parts.port is not None
            stream = await trio.open_tcp_stream(parts.hostname, parts.port)
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                parts.netloc,
                "/backtest",
                extra_headers=[(b"X-API-Key", SECRET_KEY.encode())],
            )
            control = Control(ws)
            await control.create(CreateSession(start_slot=1, slot_count=3))
            await control.recv_until(ReadyForContinue)
        try:
            with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await control.recv()
        finally:
            await trio.aclose_forcefully(stream)
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1001


async def test_faults_work_over_tcp_too(tcp_server: LocalServer) -> None:
    async with tcp_websocket(tcp_server.url, [(b"X-API-Key", SECRET_KEY.encode())]) as ws:
        control = Control(ws)
        created = await control.create(CreateSession(start_slot=1, slot_count=3))
        await control.recv_until(ReadyForContinue)
        assert tcp_server.faults.drop("control", session_id=created.session_id) == 1
        with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(10):
            while True:
                await control.recv()
        assert closed.value.reason is not None
        assert closed.value.reason.code == 1006
