"""A scripted fake backtest server, and a tap on the local server's byte streams.

`FakeServer` is a client connector: every connection the client opens becomes an
in-memory WebSocket whose server end is handed to a per-connection *script* the test
writes, so a test can misbehave in exactly one way at an exact virtual time. Once the
script returns, the connection idles: it keeps reading, answers
``closeBacktestSession`` with ``success`` and closes with 1000, as a server would.

`TappingConnector` connects a client to a real `LocalServer` over memory streams and
records every byte the server received on each connection.
"""

from __future__ import annotations

import itertools
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal, cast, final

import orjson
import trio
import trio_websocket
from trio_websocket import CloseReason, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, Request, TextMessage

from trio_backtest.testing import LocalServer, memory_pipe_pair, open_client_websocket

__all__ = [
    "FakeConnection",
    "FakeServer",
    "Script",
    "TapStream",
    "TappingConnector",
    "URL",
    "control",
    "open_fake_server",
    "rpc_result",
    "transaction",
    "unwrap_single",
]

#: A loopback control URL, so plain ws:// needs no ``allow_insecure``.
URL = "ws://localhost:9/backtest"

Plane = Literal["control", "data"]
_MISSING: Any = object()


def control(method: str, params: Any = _MISSING, *, seq: int | None = None) -> dict[str, Any]:
    """A control-socket message from the server (``seq`` becomes its ``seqId``)."""
    message: dict[str, Any] = {"method": method}
    if params is not _MISSING:
        message["params"] = params
    if seq is not None:
        message["seqId"] = seq
    return message


def rpc_result(request_id: Any, result: Any) -> dict[str, Any]:
    """A JSON-RPC success answer."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def transaction(subscription: int, slot: Any, signature: str) -> dict[str, Any]:
    """A ``transactionNotification`` of a minimal transaction (``slot`` as given)."""
    result = {
        "slot": slot,
        "blockTime": None,
        "transaction": {"signatures": [signature], "message": {}},
        "meta": {"err": None},
    }
    return {
        "jsonrpc": "2.0",
        "method": "transactionNotification",
        "params": {"subscription": subscription, "result": result},
    }


@final
class FakeConnection:
    """The server end of one client connection, as a script sees it."""

    def __init__(self, plane: Plane, number: int, path: str, headers: dict[str, str]) -> None:
        self.plane = plane
        """``control`` for ``/backtest``, ``data`` for ``/backtest/<id>``."""
        self.number = number
        """1 for the first connection of this plane, 2 for the next, ..."""
        self.path = path
        self.headers = headers
        """The upgrade request's headers, names lower-cased."""
        self.opened_at = trio.current_time()
        self.received: list[Any] = []
        """Every message the client sent, JSON-decoded where possible."""
        self.sent = 0
        """Frames this server end sent."""
        self.close_reason: CloseReason | None = None
        """How the connection ended (the client's close code, or 1006)."""
        self.closed_at: float | None = None
        self._ws: WebSocketConnection | None = None
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"<FakeConnection {self.plane}#{self.number} {self.path}>"

    @property
    def ws(self) -> WebSocketConnection:
        """The server-side WebSocket."""
        assert self._ws is not None
        return self._ws

    @property
    def close_code(self) -> int | None:
        """The close code the connection ended with (None while open)."""
        return None if self.close_reason is None else self.close_reason.code

    async def receive(self) -> Any:
        """The client's next message, JSON-decoded (raw text if it is not JSON)."""
        raw = await self.ws.get_message()
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = raw
        self.received.append(message)
        return message

    async def expect(self, method: str) -> dict[str, Any]:
        """Read until the client sends ``method``; return that message."""
        while True:
            message = await self.receive()
            if isinstance(message, dict) and message.get("method") == method:
                return message

    async def send(self, message: Any) -> None:
        """Send ``message`` as one JSON text frame."""
        await self.send_raw(orjson.dumps(message).decode())

    async def send_raw(self, data: str | bytes) -> None:
        """Send one frame exactly as given (text for ``str``, binary for ``bytes``)."""
        await self.ws.send_message(data)
        self.sent += 1

    async def close(self, code: int, reason: str = "") -> None:
        """Close the WebSocket with ``code``."""
        await self.ws.aclose(code, reason or None)

    async def hang(self) -> None:
        """Read (and answer pings) but never send anything, until the client leaves."""
        while True:
            await self.receive()

    async def create(
        self,
        session_id: str = "fake-session",
        *,
        seq: Iterator[int] | None = None,
        start_slot: int | None = None,
    ) -> dict[str, Any]:
        """Answer ``createBacktestSession`` as a good server does, up to ``readyForContinue``.

        ``seq`` numbers the messages of a resumable session. Returns the create's params.
        """
        request = await self.expect("createBacktestSession")
        params: dict[str, Any] = request.get("params") or {}
        first = params.get("startSlot", 0) if start_slot is None else start_slot
        await self.send_session_created(session_id, seq=seq)
        await self.send(control("slotNotification", first, seq=_next(seq)))
        await self.send(control("readyForContinue", seq=_next(seq)))
        return params

    async def send_session_created(
        self, session_id: str = "fake-session", *, seq: Iterator[int] | None = None
    ) -> None:
        """Send ``sessionCreated`` with a data plane at ``/backtest/<session_id>``."""
        params = {"sessionId": session_id, "rpcEndpoint": f"/backtest/{session_id}"}
        await self.send(control("sessionCreated", params, seq=_next(seq)))

    async def attach(self) -> dict[str, Any]:
        """Answer ``attachBacktestSession`` with ``sessionAttached``; return the attach."""
        request = await self.expect("attachBacktestSession")
        params = request["params"]
        sid = params["session_id"]
        await self.send(control("sessionAttached", {"sessionId": sid, "rpcEndpoint": self.path}))
        return cast(dict[str, Any], params)

    async def ack_subscriptions(self, count: int) -> dict[str, int]:
        """Acknowledge ``count`` subscribe requests; return subscription ids by address."""
        ids: dict[str, int] = {}
        while len(ids) < count:
            request = await self.receive()
            if isinstance(request, dict) and str(request.get("method", "")).endswith("Subscribe"):
                sid = 100 + next(self._ids)
                ids[request["params"][0]] = sid
                await self.send(rpc_result(request["id"], sid))
        return ids

    async def idle(self) -> None:
        """What a well-behaved server does with an otherwise idle connection."""
        while True:
            message = await self.receive()
            if isinstance(message, dict) and message.get("method") == "closeBacktestSession":
                await self.send(control("success"))
                await self.close(1000)
                return


def _next(seq: Iterator[int] | None) -> int | None:
    return None if seq is None else next(seq)


Script = Callable[[FakeConnection], Awaitable[object]]
"""What the server does on one connection; it may branch on ``conn.plane``/``conn.number``."""


@final
class FakeServer:
    """A client connector whose every connection is served by a test's `Script`.

    Args:
        nursery: Where the server ends run (cancelled when the test's block ends).
        script: Run once per accepted connection.
        reject: Optional; an HTTP status to refuse a connection's upgrade with.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        script: Script,
        reject: Callable[[FakeConnection], int | None] | None = None,
    ) -> None:
        self._nursery = nursery
        self._script = script
        self._reject = reject
        self.connections: list[FakeConnection] = []
        """Every connection attempt, in order."""
        self.attempt_headers: list[list[tuple[str, str]]] = []
        """The ``headers`` argument of every call, as the client passed it."""

    def __repr__(self) -> str:
        return f"<FakeServer connections={len(self.connections)}>"

    def of(self, plane: Plane) -> list[FakeConnection]:
        """The connections of one plane, in order."""
        return [c for c in self.connections if c.plane == plane]

    async def __call__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        headers: list[tuple[str, str]],
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
        message_queue_size: int = 1,
    ) -> WebSocketConnection:
        """Open a client WebSocket whose server end runs the script."""
        self.attempt_headers.append(list(headers))
        client_stream, server_stream = memory_pipe_pair()
        self._nursery.start_soon(self._serve, server_stream)
        return await open_client_websocket(
            nursery,
            client_stream,
            url,
            headers=headers,
            max_message_size=max_message_size,
            message_queue_size=message_queue_size,
        )

    async def _serve(self, stream: trio.abc.Stream) -> None:
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            plane: Plane = "control" if request.path.rstrip("/") == "/backtest" else "data"
            number = 1 + len(self.of(plane))
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            conn = FakeConnection(plane, number, request.path, headers)
            self.connections.append(conn)
            status = self._reject(conn) if self._reject is not None else None
            if status is not None:
                await request.reject(status, body=f"{status}\n".encode())
                conn.close_reason = CloseReason(1006, f"rejected with HTTP {status}")
                conn.closed_at = trio.current_time()
                nursery.cancel_scope.cancel()
                return
            conn._ws = await request.accept()
            try:
                await self._script(conn)
                await conn.idle()
            except trio_websocket.ConnectionClosed:
                pass
            finally:
                conn.close_reason = conn.ws.closed or CloseReason(1006, "dropped")
                conn.closed_at = trio.current_time()
                await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_fake_server(
    script: Script, *, reject: Callable[[FakeConnection], int | None] | None = None
) -> AsyncIterator[FakeServer]:
    """A `FakeServer` whose connections live until the block ends.

    A single exception leaves the block as itself, not wrapped in an exception group.
    """
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            yield FakeServer(nursery, script, reject)
            nursery.cancel_scope.cancel()


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise an exception group holding one exception (however nested) as that one."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        pending: list[BaseException] = [group]
        while pending:
            exc = pending.pop()
            if isinstance(exc, BaseExceptionGroup):
                pending.extend(exc.exceptions)
            else:
                leaves.append(exc)
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


# ---------------------------------------------------------------- the local server, tapped


@final
class TapStream(trio.abc.HalfCloseableStream):
    """A server-side stream that records every byte the server received."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, url: str) -> None:
        self._inner = inner
        self.url = url
        """Where the client connected."""
        self.received = bytearray()

    @property
    def request_head(self) -> bytes:
        """The HTTP upgrade request as the server received it."""
        head, _, _ = bytes(self.received).partition(b"\r\n\r\n")
        return head

    def decode(self) -> tuple[dict[str, str], list[str | bytes]]:
        """The upgrade's headers (names lower-cased) and every message, unmasked."""
        head, _, frames = bytes(self.received).partition(b"\r\n\r\n")
        ws = WSConnection(ConnectionType.SERVER)
        ws.receive_data(head + b"\r\n\r\n")
        headers: dict[str, str] = {}
        for event in ws.events():
            if isinstance(event, Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.extra_headers}
                headers["host"] = event.host
                ws.send(AcceptConnection())
        messages: list[str | bytes] = []
        parts: list[Any] = []
        ws.receive_data(frames)
        for event in ws.events():
            if isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    text = isinstance(event, TextMessage)
                    messages.append(("" if text else b"").join(parts))
                    parts = []
        return headers, messages

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Forward to the client."""
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Forward."""
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        """Forward."""
        await self._inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive from the client, keeping a copy."""
        data = await self._inner.receive_some(max_bytes)
        self.received += data
        return bytes(data)

    async def aclose(self) -> None:
        """Forward."""
        await self._inner.aclose()


@final
class TappingConnector:
    """Connects a client to a `LocalServer` over memory streams, recording what it received."""

    def __init__(self, server: LocalServer) -> None:
        self._connector = server.connector(wrap_stream=self._tap)
        self.taps: list[TapStream] = []
        """One per connection attempt, in order."""

    def __repr__(self) -> str:
        return f"<TappingConnector taps={len(self.taps)}>"

    def of(self, plane: Plane) -> list[TapStream]:
        """The taps of one plane's connections."""
        return [t for t in self.taps if _plane_of(t.url) == plane]

    async def __call__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        headers: list[tuple[str, str]],
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
        message_queue_size: int = 1,
    ) -> WebSocketConnection:
        """Open a WebSocket to the local server through a recording stream."""
        return await self._connector(
            nursery,
            url,
            headers=headers,
            max_message_size=max_message_size,
            message_queue_size=message_queue_size,
        )

    def _tap(self, stream: trio.abc.HalfCloseableStream, url: str) -> TapStream:
        tap = TapStream(stream, url)
        self.taps.append(tap)
        return tap


def _plane_of(url: str) -> Plane:
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return "control" if path == "/backtest" else "data"
