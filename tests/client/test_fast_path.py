"""The short data path: what is buffered is taken without waiting, and nothing changes.

A busy stream is read without a checkpoint per message (`WebSocket.receive_nowait`),
trio-websocket's reader queues a whole read's messages before it yields, and
`next_event` takes buffered events without a task switch. These tests pin what that
must not change: order, fragments, back-pressure, errors, and fairness to other tasks.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trio_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from tests.client.helpers import SlowReader, until_ready
from trio_backtest import (
    ClientConfig,
    Completed,
    ContinueParams,
    CreateSession,
    Transaction,
    open_backtest_session,
)
from trio_backtest._connectors import default_connector
from trio_backtest._plumbing import Counters
from trio_backtest._policy import CauseKind
from trio_backtest._transport import (
    MESSAGE_QUEUE_SIZE,
    Dead,
    Link,
    TrioWebSocket,
    WebSocket,
    connect,
)
from trio_backtest.server import memory_pipe_pair
from trio_backtest.testing import open_memory_server

#: Generous for loopback; a hang guard, not a speed claim.
BOUND = 20.0


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One unmasked server frame (payloads here are short: one length byte)."""
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


def text(value: str, *, fin: bool = True) -> bytes:
    return _frame(0x1, value.encode(), fin=fin)


def continuation(value: str) -> bytes:
    return _frame(0x0, value.encode())


def binary(value: bytes) -> bytes:
    return _frame(0x2, value)


async def _accept(stream: trio.abc.Stream) -> None:
    """Answer a client's upgrade with wsproto; afterwards the test writes raw frames."""
    server = WSConnection(ConnectionType.SERVER)
    while True:
        server.receive_data(await stream.receive_some(65536))
        if any(isinstance(event, Request) for event in server.events()):
            break
    await stream.send_all(server.send(AcceptConnection()))


@asynccontextmanager
async def raw_server(
    script: Callable[[trio.abc.Stream], Awaitable[None]],
) -> AsyncIterator[str]:
    """A loopback TCP server that upgrades each connection, runs ``script`` on it, closes it."""

    async def handler(stream: trio.SocketStream) -> None:
        await _accept(stream)
        await script(stream)
        await stream.aclose()  # what was sent is read before the end of the stream

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/backtest"
        nursery.cancel_scope.cancel()


async def take(ws: WebSocket) -> str | bytes:
    """What a manager does: a buffered message at once, else wait for one."""
    message = ws.receive_nowait()
    return message if message is not None else await ws.receive()


@pytest.fixture(params=["trio-websocket", "websockets"])
def config(request: pytest.FixtureRequest) -> ClientConfig:
    return ClientConfig(transport=request.param)


async def test_a_burst_keeps_its_order_and_fragments_still_assemble(config: ClientConfig) -> None:
    burst = b"".join(
        [
            text("one"),
            text("two"),
            binary(b"\x00\x01"),
            text("thr", fin=False),  # a message in two frames: left to the waiting path
            continuation("ee"),
            text("four"),
        ]
    )

    async def script(stream: trio.abc.Stream) -> None:
        await stream.send_all(burst)

    with trio.fail_after(BOUND):
        async with raw_server(script) as url, trio.open_nursery() as nursery:
            ws = await connect(default_connector(config), nursery, url, config, [])
            got = [await take(ws) for _ in range(5)]
            assert ws.receive_nowait() is None  # nothing more is buffered
            await ws.abort()
    assert got == ["one", "two", b"\x00\x01", "three", "four"]


async def test_a_text_frame_that_is_not_utf8_fails_the_connection(config: ClientConfig) -> None:
    async def script(stream: trio.abc.Stream) -> None:
        await stream.send_all(text("fine") + _frame(0x1, b"\xff\xfe") + text("after"))

    with trio.fail_after(BOUND):
        async with raw_server(script) as url, trio.open_nursery() as nursery:
            ws = await connect(default_connector(config), nursery, url, config, [])
            assert await take(ws) == "fine"
            with pytest.raises(Dead) as info:
                while True:
                    await take(ws)
            await ws.abort()
    assert (info.value.cause.kind, info.value.cause.code) == (CauseKind.CLOSED, 1007)


@asynccontextmanager
async def memory_websocket(
    queue_size: int = MESSAGE_QUEUE_SIZE,
) -> AsyncIterator[tuple[trio_websocket.WebSocketConnection, trio.abc.Stream]]:
    """A genuine trio-websocket client over an in-memory pipe; the server end is raw."""
    client_stream, server_stream = memory_pipe_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery, client_stream, "localhost", "/backtest", message_queue_size=queue_size
        )
        yield ws, server_stream
        nursery.cancel_scope.cancel()


async def test_the_reader_queues_a_whole_read_before_it_yields(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_websocket() as (connection, server):
        ws = TrioWebSocket(connection)
        buffered_at_wake: list[int] = []
        got: list[str | bytes] = []

        async def consumer() -> None:
            got.append(await ws.receive())  # waits before anything was sent
            buffered_at_wake.append(connection._recv_channel.statistics().current_buffer_used)
            while (message := ws.receive_nowait()) is not None:
                got.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            await server.send_all(b"".join(text(f"m{n}") for n in range(10)))
    # The reader handed the first message to the waiting consumer and queued the other
    # nine from the same read before it yielded: the consumer woke to all of them.
    assert buffered_at_wake == [9]
    assert got == [f"m{n}" for n in range(10)]


async def test_a_full_queue_still_holds_the_reader_back(autojump_clock: trio.abc.Clock) -> None:
    async with memory_websocket(queue_size=4) as (connection, server):
        ws = TrioWebSocket(connection)
        await server.send_all(b"".join(text(f"m{n}") for n in range(12)))
        await trio.testing.wait_all_tasks_blocked()
        first = []
        while (message := ws.receive_nowait()) is not None:
            first.append(message)
        # The queue took 4 and the reader waited with the fifth (it moves into the queue
        # as soon as there is room); the rest stayed unread until the reader ran again.
        assert first == ["m0", "m1", "m2", "m3", "m4"]
        got = first + [await ws.receive() for _ in range(7)]
    assert got == [f"m{n}" for n in range(12)]


async def test_a_stand_in_keeps_its_own_reading(autojump_clock: trio.abc.Clock) -> None:
    """A wrapper around a connection (a test's slow reader) is never read around."""
    async with memory_websocket() as (connection, server):
        slow = TrioWebSocket(SlowReader(connection, delay=1.0))  # type: ignore[arg-type]
        await server.send_all(text("a") + text("b"))
        await trio.testing.wait_all_tasks_blocked()
        assert slow.receive_nowait() is None
        began = trio.current_time()
        assert await slow.receive() == "a"
        assert trio.current_time() - began == pytest.approx(1.0)


async def test_a_closed_connection_is_reported_by_the_waiting_path(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_websocket() as (connection, server):
        ws = TrioWebSocket(connection)
        await server.send_all(text("last") + _frame(0x8, (4404).to_bytes(2, "big") + b"gone"))
        await trio.testing.wait_all_tasks_blocked()
        assert ws.receive_nowait() == "last"
        assert ws.receive_nowait() is None
        with pytest.raises(Dead) as info:
            await ws.receive()
    assert (info.value.cause.code, info.value.cause.detail) == (4404, "gone")


async def test_a_link_counts_what_it_takes_without_waiting(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_websocket() as (connection, server):
        counters = Counters()
        link = Link(TrioWebSocket(connection), ClientConfig(), 1, counters)
        await server.send_all(text("abc") + text("de"))
        await trio.testing.wait_all_tasks_blocked()
        assert [link.receive_nowait(), link.receive_nowait(), link.receive_nowait()] == [
            "abc",
            "de",
            None,
        ]
    assert (counters.messages, counters.bytes) == (2, 5)


async def test_next_event_lets_other_tasks_run_while_it_drains_a_full_buffer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Buffered events are taken without a task switch, but never for long: every 64
    events the user's task yields, so its other tasks run while a backlog drains."""
    config = ClientConfig(notification_buffer=4096, event_buffer=4096)
    async with open_memory_server(seed=3, transactions_per_slot=120.0) as server:
        create = CreateSession(start_slot=0, slot_count=9)
        async with open_backtest_session(
            server.url, server.api_key, create, connector=server.connector(), config=config
        ) as session:
            await session.subscribe_transactions(server.ledger.programs)
            await until_ready(session)
            await session.send_continue(ContinueParams(advance_count=10))
            # Let the whole run arrive unread, so the events wait in the buffer.
            await trio.sleep(5)
            buffered = session._source.statistics().current_buffer_used
            ticks = 0

            async def sibling() -> None:
                nonlocal ticks
                while True:
                    await trio.lowlevel.checkpoint()
                    ticks += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sibling)
                events = [event async for event in session.events()]
                nursery.cancel_scope.cancel()
    assert buffered > 256
    assert isinstance(events[-1], Completed)
    assert sum(isinstance(event, Transaction) for event in events) > 256
    # Everything was buffered, so draining never had to wait: the sibling ran because
    # next_event yielded on its own, about once per 64 events (at least half of those
    # turns are asked for here: the scheduler's order within a turn varies).
    assert ticks >= len(events) // 64 // 2 >= 8
