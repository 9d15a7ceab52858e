"""The server's small parts: the bounded memory pipe, the HTTP head, config, repr, statistics."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.conftest import SECRET_KEY
from tests.server.wire import open_control, open_data, run_to_completion
from trio_backtest.protocol import CreateSession
from trio_backtest.server import (
    ChaosConfig,
    LocalServer,
    ServerConfig,
    memory_pipe_pair,
    open_local_server,
)
from trio_backtest.server._http import HttpConnection, HttpRequest, PrefixedStream


async def test_memory_pipe_blocks_the_writer_when_the_buffer_is_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = memory_pipe_pair(capacity=10)
    with trio.move_on_after(1) as blocked:
        await left.send_all(b"x" * 25)
    assert blocked.cancelled_caught  # only 10 bytes fit while nobody reads
    assert await right.receive_some() == b"x" * 10
    async with trio.open_nursery() as nursery:
        nursery.start_soon(left.send_all, b"abcdefghijklmno")
        received = b""
        while len(received) < 15:
            received += await right.receive_some(4)
        assert received == b"abcdefghijklmno"


async def test_memory_pipe_close_semantics(autojump_clock: trio.testing.MockClock) -> None:
    left, right = memory_pipe_pair()
    await left.send_all(b"last words")
    await left.send_eof()
    assert await right.receive_some() == b"last words"
    assert await right.receive_some() == b""
    await right.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await right.receive_some()
    sender, receiver = memory_pipe_pair()
    await receiver.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await right_peer_send(sender)
    with pytest.raises(ValueError, match="capacity"):
        memory_pipe_pair(capacity=0)


async def right_peer_send(stream: trio.abc.SendStream) -> None:
    """Sending toward a closed receiver fails like a reset TCP connection."""
    await stream.send_all(b"anyone?")


async def test_memory_pipe_is_a_conforming_stream() -> None:
    async def make() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        return memory_pipe_pair()

    await trio.testing.check_two_way_stream(make, None)


async def _request(data: bytes) -> tuple[HttpRequest | None, bytes, HttpConnection]:
    """What the server's HTTP reader makes of ``data`` (then EOF), and what it answered."""
    client, server = memory_pipe_pair()
    http = HttpConnection(server)
    await client.send_all(data)
    await client.send_eof()
    request = await http.next_request()
    answer = b""
    with trio.move_on_after(0.1):
        answer = bytes(await client.receive_some())
    return request, answer, http


async def test_request_heads_parse_or_are_refused(autojump_clock: trio.testing.MockClock) -> None:
    head, _, http = await _request(
        b"GET /backtest?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nX-API-Key: k\r\n\r\nrest"
    )
    assert head is not None
    assert head.path == "/backtest"
    assert head.header("x-api-key") == "k"
    assert head.header("missing") is None
    assert head.is_websocket_upgrade
    # The WebSocket library gets the head again, then what followed it.
    assert http.upgrade_bytes(head).startswith(b"GET /backtest?x=1 HTTP/1.1\r\nhost: h\r\n")
    assert http.upgrade_bytes(head).endswith(b"\r\n\r\nrest")
    incomplete, answer, _ = await _request(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert incomplete is None
    tls, answer, _ = await _request(b"\x16\x03\x01\x02\r\n\r\n")
    assert tls is None
    assert answer.startswith(b"HTTP/1.1 400 ")
    broken, answer, _ = await _request(b"GET / HTTP/1.1\r\nbroken header\r\n\r\n")
    assert broken is None
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_prefixed_stream_returns_the_put_back_bytes_first() -> None:
    left, right = memory_pipe_pair()
    stream = PrefixedStream(right, b"head")
    await left.send_all(b"tail")
    assert await stream.receive_some(2) == b"he"
    assert await stream.receive_some() == b"ad"
    assert await stream.receive_some() == b"tail"


def test_config_validates_and_hides_keys() -> None:
    config = ServerConfig(api_keys=(SECRET_KEY,))
    assert SECRET_KEY not in repr(config)
    with pytest.raises(ValueError, match="backpressure"):
        ServerConfig(backpressure="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="api_keys"):
        ServerConfig(api_keys=())
    with pytest.raises(ValueError, match="close code"):
        ChaosConfig(close_codes=(1006,))
    with pytest.raises(ValueError, match="probability"):
        ChaosConfig(drop_probability=2.0)
    assert not ChaosConfig().active


async def test_the_server_repr_hides_its_keys_and_the_url_is_well_formed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_local_server(api_keys=(SECRET_KEY, "other"), tcp=False) as server:
        assert SECRET_KEY not in repr(server)
        assert server.url == "ws://127.0.0.1:0/backtest"
        assert server.api_key == SECRET_KEY


async def test_statistics_count_what_happened(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=1, slot_count=2))
        data = await open_data(server, nursery, created.session_id)
        await data.subscribe("transactionSubscribe", server.ledger.programs[0])
        data.collect(nursery)
        live = server.statistics()
        assert live.sessions_by_state in ({"starting": 1}, {"ready": 1})
        assert live.connections_open == {"control": 1, "data": 1}
        await run_to_completion(control)
        await data.closed.wait()
        stats = server.statistics()
        assert stats.sessions_by_state == {"completed": 1}
        assert stats.sessions_created == 1
        assert stats.connections_accepted == 2
        assert stats.notifications_sent == len(data.take())
        assert stats.messages_received == 3  # create, continue, subscribe
        assert stats.messages_sent == len(control.frames) + 1 + stats.notifications_sent
        assert stats.bytes_sent > stats.bytes_received > 0
        nursery.cancel_scope.cancel()


async def test_open_memory_server_has_no_listener(autojump_clock: trio.testing.MockClock) -> None:
    from trio_backtest.testing import open_memory_server

    async with open_memory_server(api_keys=(SECRET_KEY,), seed=2) as server:
        assert server.url.endswith(":0/backtest")
        assert not server.config.tcp
        async with trio.open_nursery() as nursery:
            control = await open_control(server, nursery)
            await control.create(CreateSession(start_slot=1, slot_count=1))
            nursery.cancel_scope.cancel()
    with pytest.raises(TypeError, match="TCP"):
        async with open_memory_server(tcp=True):
            pass  # pragma: no cover
