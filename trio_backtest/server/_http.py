"""HTTP/1.1 on the server's port, parsed by h11: requests, bodies, answers, keep-alive.

Every connection starts here. A WebSocket upgrade is handed to trio-websocket with the
request head re-serialized in front of whatever the client already sent after it; every
other request is answered here (``/health``, ``/available-ranges``, JSON-RPC on a
session's path, 404/405/426), keeping the connection alive when both sides allow it.
"""

from __future__ import annotations

import contextlib
from typing import Final, final

import attrs
import h11
import trio

__all__ = ["MAX_HEAD_BYTES", "HttpConnection", "HttpRequest", "PrefixedStream", "TooLarge"]

#: Longest request head accepted; browsers and WebSocket clients send well under 8 KiB.
MAX_HEAD_BYTES: Final = 16 * 1024
_RECEIVE_SIZE: Final = MAX_HEAD_BYTES
"""Bytes read at a time: h11 measures an incomplete head per read, so no more than the limit."""


@final
@attrs.frozen
class HttpRequest:
    """The request line and headers of one HTTP request."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    """``(lower-case name, value)`` pairs in order."""
    http_version: str = "1.1"

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    @property
    def is_websocket_upgrade(self) -> bool:
        """Whether the request asks to switch to the WebSocket protocol."""
        upgrade = self.header("upgrade") or ""
        return "websocket" in (token.strip().lower() for token in upgrade.split(","))

    def head_bytes(self) -> bytes:
        """The request head, serialized again (for the WebSocket library to parse)."""
        lines = [f"{self.method} {self.target} HTTP/{self.http_version}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@final
class TooLarge(Exception):
    """A request body exceeded the limit."""


@final
class HttpConnection:
    """The server side of one HTTP/1.1 connection (h11 does the parsing)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)

    async def _next_event(self) -> h11.Event | type[h11.PAUSED] | None:
        """The next event, reading as needed; ``None`` when the peer went away."""
        while True:
            event = self._conn.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            try:
                data = await self._stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            self._conn.receive_data(bytes(data))

    async def next_request(self) -> HttpRequest | None:
        """The next request head; ``None`` when the peer closed or spoke no HTTP.

        Input that is not HTTP/1.1 is answered with the status h11 suggests (400, 413, 431)
        and a closing connection.
        """
        try:
            event = await self._next_event()
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint)
            return None
        if not isinstance(event, h11.Request):
            return None
        return HttpRequest(
            event.method.decode("latin-1"),
            event.target.decode("latin-1"),
            tuple(
                (name.decode("latin-1"), value.decode("latin-1")) for name, value in event.headers
            ),
            event.http_version.decode("latin-1"),
        )

    async def read_body(self, limit: int) -> bytes | None:
        """The request body; ``None`` when the peer went away or sent a broken body.

        Raises:
            TooLarge: the body is longer than ``limit`` bytes.
        """
        body = bytearray()
        while True:
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError:
                return None
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > limit:
                    raise TooLarge
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                return None

    def upgrade_bytes(self, request: HttpRequest) -> bytes:
        """The head of ``request`` and every byte the client sent after it."""
        trailing, _ = self._conn.trailing_data
        return request.head_bytes() + bytes(trailing)

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        close: bool = False,
        head_only: bool = False,
    ) -> bool:
        """Send a complete response; False when it could not be sent."""
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        if close:
            headers.append(("connection", "close"))
        try:
            data = self._conn.send(h11.Response(status_code=status, headers=headers))
            if body and not head_only:
                data += self._conn.send(h11.Data(data=body))
            data += self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return False
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def next_cycle(self) -> bool:
        """Get ready for the next request on the same connection; False when it must close."""
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
            return True
        return False

    async def _refuse(self, status: int) -> None:
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        with contextlib.suppress(h11.LocalProtocolError):
            await self.respond(status, b"bad request\n", close=True)


@final
class PrefixedStream(trio.abc.Stream):
    """A stream that first returns bytes already read from ``inner``, then reads ``inner``."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send through the inner stream."""
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the inner stream."""
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """The put-back bytes first, then the inner stream's."""
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close the inner stream."""
        self._prefix = b""
        await self.inner.aclose()
