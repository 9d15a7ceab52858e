"""An httpx transport that reaches a local server's HTTP side over in-memory streams.

With it, a test drives a session's JSON-RPC (protocol.md §6) under
``trio.testing.MockClock`` with no sockets at all, like :meth:`LocalServer.connector` does
for the WebSockets. Every request opens a fresh in-memory connection; the server's faults
(HTTP faults, a shared link) apply exactly as over TCP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import h11
import httpx
import trio

from ._memory import memory_pipe_pair

__all__ = ["MemoryHttpTransport"]

_RECEIVE_SIZE = 64 * 1024


@final
class MemoryHttpTransport(httpx.AsyncBaseTransport):
    """Sends each request over a new in-memory connection to the server."""

    def __init__(self, start: Callable[[trio.abc.Stream], None], buffer_size: int) -> None:
        """Use ``start(stream)`` to hand the server's end of a new connection to the server."""
        self._start = start
        self._buffer_size = buffer_size

    def __repr__(self) -> str:
        return "MemoryHttpTransport()"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole answer.

        Raises:
            httpx.ConnectError: the server is no longer running.
            httpx.RemoteProtocolError: the server closed the connection without an answer.
            httpx.ReadError: the connection broke.
        """
        body = await request.aread()
        client, server = memory_pipe_pair(self._buffer_size)
        try:
            self._start(server)
        except RuntimeError:
            raise httpx.ConnectError("the local server is not running", request=request) from None
        try:
            status, headers, content = await _exchange(client, request, body)
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc), request=request) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise httpx.ReadError(str(exc) or "the connection broke", request=request) from None
        finally:
            await trio.aclose_forcefully(client)
        return httpx.Response(status, headers=headers, content=content, request=request)


async def _exchange(
    stream: trio.abc.Stream, request: httpx.Request, body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    conn = h11.Connection(h11.CLIENT)
    headers = list(request.headers.raw)
    if not any(name.lower() == b"host" for name, _ in headers):
        headers.insert(0, (b"host", request.url.netloc))
    data = conn.send(
        h11.Request(method=request.method, target=request.url.raw_path, headers=headers)
    )
    if body:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)
    response: h11.Response | None = None
    content = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(_RECEIVE_SIZE)))
            continue
        if isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            content += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response.status_code, list(response.headers), bytes(content)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("the server closed the connection without an answer")
