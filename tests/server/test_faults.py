from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from trio_backtest.server._faults import FaultStream, Link, LinkStatistics

StreamPair = tuple[FaultStream, trio.abc.Stream]


@asynccontextmanager
async def memory_pair(link: Link | None = None) -> AsyncIterator[StreamPair]:
    server, client = trio.testing.memory_stream_pair()
    faulty = FaultStream(server, link=link)
    try:
        yield faulty, client
    finally:
        await trio.aclose_forcefully(faulty)
        await trio.aclose_forcefully(client)


@asynccontextmanager
async def tcp_pair(link: Link | None = None) -> AsyncIterator[StreamPair]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    faulty = FaultStream(server, link=link)
    try:
        yield faulty, client
    finally:
        await trio.aclose_forcefully(faulty)
        await trio.aclose_forcefully(client)


PAIRS = pytest.mark.parametrize("make_pair", [memory_pair, tcp_pair], ids=["memory", "tcp"])
PairFactory = Callable[..., Any]


async def receive_exactly(stream: trio.abc.ReceiveStream, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some()
        assert chunk, "unexpected end of stream"
        data += chunk
    return bytes(data)


async def sees_end(stream: trio.abc.ReceiveStream) -> str:
    """How the peer observes the connection ending: ``"end of file"`` or ``"reset"``."""
    try:
        while await stream.receive_some():
            pass
    except trio.BrokenResourceError:
        return "reset"
    return "end of file"


# --- drop ----------------------------------------------------------------------------------


@PAIRS
async def test_drop_ends_the_connection_for_both_sides(make_pair: PairFactory) -> None:
    with trio.fail_after(10):  # hang guard only: real sockets cannot use virtual time
        async with make_pair() as (server, client):
            await server.send_all(b"hello")
            assert await receive_exactly(client, 5) == b"hello"
            await client.send_all(b"hi")
            assert await server.receive_some() == b"hi"

            outcome: dict[str, Any] = {}

            async def pending_server_receive() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await server.receive_some()
                outcome["server"] = "broken"

            async def pending_client_receive() -> None:
                outcome["client"] = await sees_end(client)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pending_server_receive)
                nursery.start_soon(pending_client_receive)
                await trio.testing.wait_all_tasks_blocked()
                server.drop()
            # Over memory the peer reads end-of-file; over TCP the abortive close resets.
            ending = "end of file" if make_pair is memory_pair else "reset"
            assert outcome == {"server": "broken", "client": ending}

            # The peer's writes fail too (memory: at once; TCP: the reset already arrived).
            with pytest.raises(trio.BrokenResourceError):
                await client.send_all(b"x" * 1024)
            for call in (
                lambda: server.send_all(b"late"),
                server.receive_some,
                server.wait_send_all_might_not_block,
            ):
                with pytest.raises(trio.BrokenResourceError):
                    await call()
            assert server.dropped
            assert server.statistics().dropped
            server.drop()  # idempotent

            await server.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await server.send_all(b"after close")
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some()
            await server.aclose()  # idempotent


async def test_drop_wakes_a_send_waiting_for_the_link(autojump_clock: trio.abc.Clock) -> None:
    link = Link(100, burst=10)
    async with memory_pair(link) as (server, _client):
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                with pytest.raises(trio.BrokenResourceError):
                    await server.send_all(b"x" * 10_000)

            nursery.start_soon(send)
            await trio.sleep(1)
            assert link.statistics().tasks_waiting == 1
            server.drop()
        assert trio.current_time() == pytest.approx(1)
        assert link.statistics().tasks_waiting == 0
        assert 0 < server.statistics().bytes_out < 10_000


async def test_aclose_wakes_pending_calls_with_closed_error() -> None:
    async with memory_pair() as (server, _client), trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await server.receive_some()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await server.aclose()


async def test_drop_of_an_unknown_stream_closes_it_in_the_background() -> None:
    class Recording(trio.abc.Stream):
        closed = False

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            await trio.sleep_forever()

        async def wait_send_all_might_not_block(self) -> None:
            await trio.sleep_forever()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.sleep_forever()
            raise AssertionError

        async def aclose(self) -> None:
            self.closed = True
            await trio.lowlevel.checkpoint()

    inner = Recording()
    stream = FaultStream(inner)
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            with pytest.raises(trio.BrokenResourceError):
                await stream.receive_some()

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        stream.drop()
    await trio.testing.wait_all_tasks_blocked()
    assert inner.closed


async def test_drop_under_a_websocket_looks_like_an_abnormal_closure(
    autojump_clock: trio.abc.Clock,
) -> None:
    server_stream, client_stream = trio.testing.memory_stream_pair()
    faulty = FaultStream(server_stream)
    async with trio.open_nursery() as nursery:
        request_holder: list[trio_websocket.WebSocketRequest] = []

        async def serve() -> None:
            request = await trio_websocket.wrap_server_stream(nursery, faulty)
            request_holder.append(request)
            server_ws = await request.accept()
            await server_ws.send_message("welcome")
            await trio.sleep_forever()

        nursery.start_soon(serve)
        client_ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            "/",
        )
        assert await client_ws.get_message() == "welcome"
        faulty.drop()
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await client_ws.get_message()
        assert info.value.reason is not None
        assert info.value.reason.code == 1006
        nursery.cancel_scope.cancel()
    assert request_holder


# --- black hole ----------------------------------------------------------------------------


async def test_black_hole_swallows_both_ways_for_its_duration(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_pair() as (server, client):
        server_got: list[tuple[float, bytes]] = []
        client_got: list[tuple[float, bytes]] = []

        async def collect(stream: trio.abc.ReceiveStream, into: list[tuple[float, bytes]]) -> None:
            while data := await stream.receive_some():
                into.append((trio.current_time(), bytes(data)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, server, server_got)
            nursery.start_soon(collect, client, client_got)
            server.black_hole(10)
            assert server.black_holed
            await client.send_all(b"ping")  # t=0
            await server.send_all(b"lost")
            await trio.sleep_until(9.5)
            await client.send_all(b"ping")
            await server.send_all(b"gone")
            assert server.black_holed
            await trio.sleep_until(10)
            assert not server.black_holed
            await client.send_all(b"request")
            await server.send_all(b"reply")
            await trio.sleep(1)
            nursery.cancel_scope.cancel()

        assert server_got == [(10.0, b"request")]
        assert client_got == [(10.0, b"reply")]
        stats = server.statistics()
        assert (stats.bytes_discarded_in, stats.bytes_discarded_out) == (8, 8)
        assert (stats.bytes_in, stats.bytes_out) == (7, 5)
        assert not stats.black_holed


async def test_unbounded_black_hole_lasts_until_ended(autojump_clock: trio.abc.Clock) -> None:
    async with memory_pair() as (server, client):
        server.black_hole()
        await server.send_all(b"lost")
        await trio.sleep(10_000)
        assert server.black_holed
        server.end_black_hole()
        assert not server.black_holed
        await server.send_all(b"kept")
        assert await client.receive_some() == b"kept"


async def test_a_new_black_hole_replaces_the_current_one(autojump_clock: trio.abc.Clock) -> None:
    async with memory_pair() as (server, client):
        server.black_hole(100)
        server.black_hole(2)
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                assert await server.receive_some() == b"late"
                assert trio.current_time() == 3

            nursery.start_soon(receive)
            await trio.sleep(1)
            await client.send_all(b"early")
            await trio.sleep_until(3)
            await client.send_all(b"late")
        with pytest.raises(ValueError, match="duration"):
            server.black_hole(-1)


async def test_black_hole_hides_the_peers_end_of_file(autojump_clock: trio.abc.Clock) -> None:
    async with memory_pair() as (server, client):
        server.black_hole(5)
        async with trio.open_nursery() as nursery:

            async def receive() -> None:
                assert await server.receive_some() == b""
                assert trio.current_time() == 5

            nursery.start_soon(receive)
            await trio.sleep(1)
            await client.aclose()


async def test_close_inside_black_hole_reaches_the_peer_when_it_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_pair() as (server, client):
        server.black_hole(5)
        await trio.sleep(1)
        await server.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await server.send_all(b"x")
        assert await client.receive_some() == b""
        assert trio.current_time() == 5


async def test_drop_ends_an_unbounded_black_hole_at_once(autojump_clock: trio.abc.Clock) -> None:
    async with memory_pair() as (server, client):
        server.black_hole()
        await server.aclose()  # the peer does not learn of this close ...
        await trio.sleep(50)
        server.drop()  # ... but it does learn of the loss
        assert await client.receive_some() == b""
        assert trio.current_time() == 50


async def test_black_hole_over_tcp() -> None:
    with trio.fail_after(10):  # hang guard only
        async with tcp_pair() as (server, client), trio.open_nursery() as nursery:
            received: list[bytes] = []

            async def serve() -> None:
                received.append(bytes(await server.receive_some()))

            nursery.start_soon(serve)
            server.black_hole()
            await server.send_all(b"lost")
            await client.send_all(b"swallowed")
            # Nothing to wait on but the kernel's delivery, so poll.
            while server.statistics().bytes_discarded_in < len(b"swallowed"):  # noqa: ASYNC110
                await trio.sleep(0.001)
            server.end_black_hole()
            await server.send_all(b"kept")
            assert await receive_exactly(client, 4) == b"kept"
            await client.send_all(b"seen")
        assert received == [b"seen"]


# --- link ----------------------------------------------------------------------------------


async def send_through_link(
    link: Link, streams: int, size: int, sample_at: float | None = None
) -> tuple[list[float], list[int]]:
    """Send ``size`` bytes on each of ``streams`` FaultStreams sharing ``link``.

    Returns each stream's finish time and, if asked, how many bytes each peer had received
    at ``sample_at``.
    """
    finished = [0.0] * streams
    progress = [0] * streams
    sample: list[int] = []
    async with trio.open_nursery() as nursery:
        for index in range(streams):
            server, client = trio.testing.memory_stream_pair()
            faulty = FaultStream(server, link=link)

            async def send(index: int = index, faulty: FaultStream = faulty) -> None:
                await faulty.send_all(b"x" * size)
                finished[index] = trio.current_time()

            async def receive(index: int = index, client: trio.abc.Stream = client) -> None:
                while progress[index] < size:
                    progress[index] += len(await client.receive_some())

            nursery.start_soon(send)
            nursery.start_soon(receive)
        if sample_at is not None:
            await trio.sleep_until(sample_at)
            sample = list(progress)
    assert progress == [size] * streams
    return finished, sample


async def test_link_one_stream_takes_size_over_rate(autojump_clock: trio.abc.Clock) -> None:
    link = Link(1_000, burst=100)
    finished, _ = await send_through_link(link, 1, 5_000)
    # The first burst passes at once, the rest at the rate.
    assert finished == [pytest.approx((5_000 - 100) / 1_000)]
    assert link.statistics().bytes_passed == 5_000


@pytest.mark.parametrize("streams", [2, 4, 7])
async def test_link_divides_one_budget_among_streams(
    autojump_clock: trio.abc.Clock, streams: int
) -> None:
    rate, burst, size = 1_000, 100, 5_000
    link = Link(rate, burst=burst)
    total = (streams * size - burst) / rate
    finished, sample = await send_through_link(link, streams, size, sample_at=total / 2)
    assert max(finished) == pytest.approx(total)
    # Round-robin: every stream finishes within one round of chunks of the end ...
    assert min(finished) >= total - streams * link.chunk_size / rate - 1e-9
    # ... and halfway through, every stream has about half of its bytes.
    passed_at_half = burst + rate * total / 2
    for received in sample:
        assert abs(received - passed_at_half / streams) <= link.chunk_size


async def test_link_serves_chunks_in_arrival_order(autojump_clock: trio.abc.Clock) -> None:
    link = Link(10, burst=10)
    order: list[str] = []

    async def consume(name: str, nbytes: int) -> None:
        await link.consume(nbytes)
        order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume, "a", 30)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(consume, "b", 10)
        await trio.testing.wait_all_tasks_blocked()  # trio starts tasks in random order
        nursery.start_soon(consume, "c", 10)
        await trio.testing.wait_all_tasks_blocked()
        stats = link.statistics()
        assert stats == LinkStatistics(
            bytes_per_second=10.0,
            burst=10,
            chunk_size=10,
            bytes_passed=10,
            tasks_waiting=3,
            bytes_waiting=30,
        )
    # a's second chunk queued before b and c, its third after them.
    assert order == ["b", "c", "a"]
    assert trio.current_time() == pytest.approx(4)


async def test_a_cancelled_waiter_passes_its_turn_on(autojump_clock: trio.abc.Clock) -> None:
    link = Link(10, burst=10)
    done: list[str] = []
    await link.consume(10)  # bucket now empty
    async with trio.open_nursery() as nursery:
        cancel_scope = trio.CancelScope()

        async def cancelled() -> None:
            with cancel_scope:
                await link.consume(10)
            done.append("cancelled")

        async def patient() -> None:
            await link.consume(10)
            done.append("patient")

        nursery.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(patient)
        await trio.sleep(0.5)
        cancel_scope.cancel()
    assert done == ["cancelled", "patient"]
    assert trio.current_time() == pytest.approx(1)
    assert link.statistics().bytes_passed == 20
    assert link.statistics().tasks_waiting == 0


async def test_link_refills_up_to_its_burst_while_idle(autojump_clock: trio.abc.Clock) -> None:
    link = Link(100, burst=50)
    await link.consume(50)
    await trio.sleep(100)
    start = trio.current_time()
    await link.consume(50)  # a full bucket again, not 100 s worth
    assert trio.current_time() == start
    await link.consume(100)
    assert trio.current_time() == pytest.approx(start + 1)


async def test_link_can_be_changed_live(autojump_clock: trio.abc.Clock) -> None:
    link = Link(100, burst=10)
    async with memory_pair(link) as (server, client), trio.open_nursery() as nursery:

        async def send() -> None:
            await server.send_all(b"x" * 10_000)

        nursery.start_soon(send)
        await trio.sleep(1)
        server.link = None  # the rest passes unshaped
        await trio.testing.wait_all_tasks_blocked()
        assert await receive_exactly(client, 10_000) == b"x" * 10_000
        assert trio.current_time() == pytest.approx(1)
    assert link.statistics().bytes_passed < 200


def test_link_arguments_are_checked() -> None:
    for rate in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="bytes_per_second"):
            Link(rate)
    with pytest.raises(ValueError, match="burst"):
        Link(10, burst=0)
    with pytest.raises(ValueError, match="chunk_size"):
        Link(10, chunk_size=0)
    assert Link(1_000_000).burst == 65_536
    assert Link(1_000_000).chunk_size == 16_384
    assert Link(100).burst == 10
    assert Link(100, chunk_size=500).chunk_size == 10


async def test_link_consume_edge_cases() -> None:
    link = Link(10, burst=10)
    await link.consume(0)
    with pytest.raises(ValueError, match="nbytes"):
        await link.consume(-1)
    assert link.statistics().bytes_passed == 0


# --- plain delegation ----------------------------------------------------------------------


async def test_concurrent_use_is_detected() -> None:
    async with memory_pair(Link(10, burst=1)) as (server, _client), trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, b"xx")
        nursery.start_soon(server.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await server.send_all(b"y")
        with pytest.raises(trio.BusyResourceError):
            await server.wait_send_all_might_not_block()
        with pytest.raises(trio.BusyResourceError):
            await server.receive_some()
        nursery.cancel_scope.cancel()


@PAIRS
async def test_traffic_passes_unchanged_without_faults(make_pair: PairFactory) -> None:
    payload = bytes(range(256)) * 300
    with trio.fail_after(10):  # hang guard only
        async with make_pair() as (server, client):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.send_all, payload)
                assert await receive_exactly(client, len(payload)) == payload
            await client.send_all(b"abc")
            assert await receive_exactly(server, 3) == b"abc"
            await server.send_all(b"")
            await server.wait_send_all_might_not_block()
            stats = server.statistics()
            assert (stats.bytes_out, stats.bytes_in) == (len(payload), 3)
            assert (stats.bytes_discarded_out, stats.bytes_discarded_in) == (0, 0)
            assert not stats.dropped
            assert not stats.black_holed
            assert not stats.closed
            assert server.inner is not None
