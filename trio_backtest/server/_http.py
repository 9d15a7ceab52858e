"""The HTTP head of a new connection: read it before the WebSocket library does.

The server peeks at the request head to answer ``GET /health`` and plain (non-upgrade)
requests itself, then hands the stream, with the bytes already read put back in front,
to trio-websocket.
"""

from __future__ import annotations

from typing import final

import attrs
import trio

__all__ = ["PrefixedStream", "RequestHead", "parse_request_head", "plain_response"]

#: Longest request head accepted; browsers and WebSocket clients send well under 8 KiB.
MAX_HEAD_BYTES = 16 * 1024
_END = b"\r\n\r\n"


@final
@attrs.frozen
class RequestHead:
    """The request line and headers of one HTTP request."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    """``(lower-case name, value)`` pairs in order."""

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


def parse_request_head(data: bytes) -> RequestHead | None:
    """Parse a request head ending in a blank line; ``None`` when it is not HTTP/1.x."""
    head, sep, _ = data.partition(_END)
    if not sep:
        return None
    try:
        lines = head.decode("latin-1").split("\r\n")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        headers.append((name.lower(), value.strip()))
    return RequestHead(parts[0], parts[1], tuple(headers))


async def read_request_head(stream: trio.abc.ReceiveStream) -> bytes:
    """Read until the end of the request head (or EOF, or the size limit).

    Returns:
        Every byte read, which may run past the head.
    """
    data = bytearray()
    while _END not in data and len(data) < MAX_HEAD_BYTES:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return bytes(data)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    503: "Service Unavailable",
}


def plain_response(status: int, body: str) -> bytes:
    """A complete ``text/plain`` HTTP/1.1 response that closes the connection."""
    payload = body.encode()
    reason = _REASONS.get(status, "Status")
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + payload


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
