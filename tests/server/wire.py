"""A bare trio-websocket client for the server conformance tests (no managed client)."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio
import trio_websocket

from tests.conftest import SECRET_KEY
from trio_backtest.protocol import (
    Completed,
    ControlMessage,
    CreateBacktestSession,
    CreateSession,
    CreateSessionParams,
    ReadyForContinue,
    RpcMessage,
    Sequenced,
    ServerError,
    SessionCreated,
    Success,
    decode_control,
    decode_rpc,
    encode_control,
)
from trio_backtest.server import LocalServer

Connector = Callable[..., Any]


def url_of(server: LocalServer, path: str) -> str:
    """``server.url`` with its path replaced."""
    return server.url.rsplit("/backtest", 1)[0] + path


async def connect(
    server: LocalServer,
    nursery: trio.Nursery,
    path: str = "/backtest",
    *,
    key: str | None = SECRET_KEY,
    connector: Connector | None = None,
    max_message_size: int = 64 * 1024 * 1024,
    message_queue_size: int = 16,
) -> trio_websocket.WebSocketConnection:
    """Open a WebSocket to ``path`` over the server's memory connector."""
    headers = [] if key is None else [("X-API-Key", key)]
    connect_fn = connector if connector is not None else server.connector()
    ws: trio_websocket.WebSocketConnection = await connect_fn(
        nursery,
        url_of(server, path),
        headers=headers,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
    )
    return ws


class Control:
    """A control socket: send models, receive decoded ``Sequenced`` messages, keep them all."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.received: list[Sequenced[ControlMessage]] = []
        self.frames: list[str | bytes] = []

    async def send(self, message: ControlMessage | str) -> None:
        """Send a model (encoded by the codec) or a raw text frame."""
        await self.ws.send_message(message if isinstance(message, str) else encode_control(message))

    async def recv(self) -> Sequenced[ControlMessage]:
        """The next message."""
        frame = await self.ws.get_message()
        self.frames.append(frame)
        decoded = decode_control(frame)
        self.received.append(decoded)
        return decoded

    async def recv_until(self, *types: type[Any]) -> list[Sequenced[ControlMessage]]:
        """Messages up to and including the first one of ``types``."""
        seen: list[Sequenced[ControlMessage]] = []
        while True:
            item = await self.recv()
            seen.append(item)
            if isinstance(item.message, types):
                return seen

    async def create(self, params: CreateSessionParams) -> SessionCreated:
        """Create a single session; the first reply must be ``sessionCreated``."""
        await self.send(CreateBacktestSession(params))
        first = (await self.recv()).message
        assert isinstance(first, SessionCreated), first
        return first


async def open_control(server: LocalServer, nursery: trio.Nursery, **kwargs: Any) -> Control:
    """Connect a control socket."""
    return Control(await connect(server, nursery, **kwargs))


class Data:
    """A data-plane socket: JSON-RPC requests out, decoded messages in."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self._next_id = 0
        self._taken = 0
        self.frames: list[str | bytes] = []
        self.closed = trio.Event()
        self.close_code: int | None = None

    def collect(self, nursery: trio.Nursery) -> None:
        """Read every frame into :attr:`frames` in the background (after the last ack).

        :meth:`take` then returns only frames read from now on.
        """
        self._taken = len(self.frames)
        nursery.start_soon(self._collect)

    async def _collect(self) -> None:
        try:
            while True:
                await self.recv_raw()
        except trio_websocket.ConnectionClosed as exc:
            self.close_code = None if exc.reason is None else exc.reason.code
            self.closed.set()

    def take(self) -> list[str | bytes]:
        """Frames collected since the last ``take``."""
        out = self.frames[self._taken :]
        self._taken = len(self.frames)
        return out

    async def request(self, method: str, params: list[Any]) -> int:
        """Send a request; returns its id."""
        self._next_id += 1
        body = {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        await self.ws.send_message(orjson.dumps(body).decode())
        return self._next_id

    async def subscribe(self, method: str, address: str, **config: Any) -> int:
        """Subscribe and wait for the ack; returns the subscription id."""
        await self.request(method, [address, config])
        answer = await self.recv()
        assert type(answer).__name__ == "RpcResult", answer
        result = answer.result  # type: ignore[union-attr]
        assert isinstance(result, int)
        return result

    async def recv_raw(self) -> str | bytes:
        """The next frame as sent."""
        frame = await self.ws.get_message()
        self.frames.append(frame)
        return frame

    async def recv(self) -> RpcMessage:
        """The next message, decoded (plain text frames only)."""
        return decode_rpc(await self.recv_raw())

    async def drain(self, idle: float = 1.0) -> list[str | bytes]:
        """Frames until none arrives for ``idle`` seconds or the socket closes."""
        out: list[str | bytes] = []
        while True:
            with trio.move_on_after(idle) as scope:
                try:
                    out.append(await self.recv_raw())
                except trio_websocket.ConnectionClosed:
                    return out
            if scope.cancelled_caught:
                return out


async def open_data(
    server: LocalServer, nursery: trio.Nursery, session_id: str, **kwargs: Any
) -> Data:
    """Connect a data-plane socket of ``session_id``."""
    return Data(await connect(server, nursery, f"/backtest/{session_id}", key=None, **kwargs))


async def run_to_completion(control: Control, stride: int = 5) -> list[Sequenced[ControlMessage]]:
    """Continue by ``stride`` at every ready until ``completed``; the messages seen."""
    seen: list[Sequenced[ControlMessage]] = []
    while True:
        item = await control.recv()
        seen.append(item)
        message = item.message
        if isinstance(message, ReadyForContinue):
            await control.send(f'{{"method":"continue","params":{{"advanceCount":{stride}}}}}')
        elif isinstance(message, Completed):
            return seen
        elif isinstance(message, ServerError):
            raise AssertionError(f"unexpected error {message}")


async def good_session(server: LocalServer, start: int = 100, count: int = 5) -> Completed:
    """A well-behaved client: one session with a subscription, run to completion."""
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(
            CreateSession(start_slot=start, slot_count=count - 1, send_summary=True)
        )
        data = await open_data(server, nursery, created.session_id)
        await data.subscribe("transactionSubscribe", server.ledger.programs[0])
        seen = await run_to_completion(control)
        completed = seen[-1].message
        assert isinstance(completed, Completed)
        await control.send('{"method":"closeBacktestSession"}')
        await control.recv_until(Success)
        nursery.cancel_scope.cancel()
    return completed


def expected_summary(server: LocalServer, start: int, end: int) -> dict[str, int]:
    """The summary the server must report for ``[start, end]`` executed whole."""
    txs = [tx for slot in range(start, end + 1) for tx in server.ledger.slot(slot).transactions]
    diffs = sum(len(server.ledger.slot(slot).diffs) for slot in range(start, end + 1))
    return {
        "slotsExecuted": end - start + 1,
        "transactionsExecuted": len(txs),
        "transactionsSucceeded": sum(tx.succeeded for tx in txs),
        "transactionsFailed": sum(not tx.succeeded for tx in txs),
        "accountDiffs": diffs,
    }


def signatures_for(server: LocalServer, program: str, start: int, end: int) -> list[str]:
    """Signatures of the transactions of ``[start, end]`` that mention ``program``."""
    return [
        tx.signature
        for slot in range(start, end + 1)
        for tx in server.ledger.slot(slot).transactions
        if tx.mentions(program)
    ]


def notification_signatures(frames: list[str | bytes]) -> list[str]:
    """Signatures of the transaction notifications among plain frames, in order."""
    out = []
    for frame in frames:
        message = decode_rpc(frame)
        result = getattr(message, "result", None)
        if type(message).__name__ == "TransactionNotification":
            out.append(result.signature)  # type: ignore[union-attr]
    return out


@asynccontextmanager
async def tcp_websocket(
    url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client WebSocket over TCP whose socket is closed however the connection ends.

    trio-websocket's own helpers leave the socket open when the server closes first.
    """
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery, stream, parts.netloc, parts.path, extra_headers=headers or []
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(5):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


async def raw_http(url: str, data: bytes, *, close_after: bool = False) -> bytes:
    """Send raw bytes to the host of ``url`` over TCP; everything it answers until it closes.

    With ``close_after``, close right after sending and return nothing.
    """
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    answer = bytearray()
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(data)
        if close_after:
            return b""
        with trio.fail_after(10):
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some():
                    answer += chunk
    return bytes(answer)
