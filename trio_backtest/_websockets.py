"""A connector over websockets 17's Trio client (the ``trio-backtest[websockets]`` extra).

Chosen with ``ClientConfig(transport="websockets")``. websockets' sans-I/O core parses
frames faster than wsproto, so the client spends less CPU per notification. Its Trio
front end is used only through ``connect(...)`` as an async context, held open by a
task in the manager's I/O nursery; never through its reconnecting iterator (the
managers own reconnects) nor its keepalive (`Link.keepalive` owns pings).
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from typing import Any, final

import trio

from ._config import GRACEFUL_CLOSE_TIMEOUT
from ._policy import DisconnectCause
from ._transport import Dead, WebSocket, describe, display_url, tls_failure_as_itself

try:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
    from websockets.frames import Opcode
    from websockets.trio.client import ClientConnection, connect
except ImportError as exc:  # pragma: no cover - the extra is part of the test install
    raise ImportError(
        "ClientConfig(transport='websockets') needs websockets >= 17: "
        "pip install 'trio-backtest[websockets]'"
    ) from exc

__all__ = ["WebsocketsConnection", "websockets_connector"]


class _NoDebug(logging.LoggerAdapter[logging.Logger]):
    """A logger for websockets that never logs at DEBUG.

    websockets logs every request header at DEBUG, and the control upgrade's headers
    carry the API key.
    """

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)


_LOGGER = _NoDebug(logging.getLogger("trio_backtest.transport.websockets"))


async def websockets_connector(
    nursery: trio.Nursery,
    url: str,
    *,
    headers: list[tuple[str, str]],
    max_message_size: int,
    ssl_context: ssl.SSLContext | None = None,
    message_queue_size: int = 1,
) -> WebSocket:
    """Open a WebSocket with websockets 17 over TCP (+ TLS with verification for ``wss://``).

    Failures raise what the trio-websocket connector raises for the same thing: an
    `OSError` (an `ssl.SSLError` for TLS) when the connection cannot be made, and
    `Dead` with the cause for a refused upgrade or another handshake failure.
    """
    secure = urllib.parse.urlsplit(url).scheme == "wss"
    try:
        client = connect(
            url,
            ssl=(ssl_context or ssl.create_default_context()) if secure else None,
            compression=None,  # as trio-websocket: no permessage-deflate (zstd is ours)
            additional_headers=headers,
            proxy=None,  # as trio-websocket: no proxy picked up from the environment
            open_timeout=None,  # `connect` bounds the whole attempt
            ping_interval=None,  # `Link.keepalive` pings
            ping_timeout=None,
            # After a close handshake, how long to wait for the server to end the TCP
            # connection before the close is reported anyway.
            close_timeout=GRACEFUL_CLOSE_TIMEOUT,
            max_size=max_message_size,
            max_queue=message_queue_size,
            logger=_LOGGER,
        )
    except InvalidURI:
        raise ValueError(
            f"expected a ws:// or wss:// URL with a host, got {display_url(url)!r}"
        ) from None
    with tls_failure_as_itself():
        try:
            connection: WebsocketsConnection = await nursery.start(_hold, client)
        except InvalidStatus as exc:
            raise Dead(DisconnectCause.http_status(exc.response.status_code)) from None
        except InvalidHandshake as exc:
            raise Dead(DisconnectCause.connect_failed(describe(exc))) from None
    return connection


async def _hold(client: connect, *, task_status: trio.TaskStatus[WebsocketsConnection]) -> None:
    """Keep one connection's context open until the connection is closed or aborted.

    The cancel scope lets `WebsocketsConnection.abort` end websockets' reader task
    even while it waits for the consumer (a full queue pauses reading, and closing
    the socket alone does not wake it).
    """
    with trio.CancelScope() as scope:
        async with client as connection:
            task_status.started(WebsocketsConnection(connection, scope))
            await connection.wait_closed()


@final
class WebsocketsConnection(WebSocket):
    """A websockets 17 Trio client connection as a `WebSocket`."""

    __slots__ = ("_assembler", "_bad_text", "_connection", "_scope")

    def __init__(self, connection: ClientConnection, scope: trio.CancelScope) -> None:
        self._connection = connection
        self._scope = scope
        # `receive_nowait` takes a complete buffered message straight from websockets'
        # frame queue (the assembler `recv` reads), as `recv` would but without its
        # checkpoint. It relies on websockets 17's Trio assembler; if that changes shape,
        # the fast path turns itself off and `receive` does all the work.
        assembler = getattr(connection, "recv_messages", None)
        self._assembler: Any = (
            assembler
            if all(
                hasattr(assembler, name)
                for name in ("recv_frames", "send_frames", "get_in_progress", "maybe_resume")
            )
            else None
        )
        self._bad_text = False

    def __repr__(self) -> str:
        return f"<WebsocketsConnection {self._connection.protocol.state.name}>"

    async def receive(self) -> str | bytes:
        if self._bad_text:
            # `receive_nowait` took a text frame that is not UTF-8: fail the connection
            # as websockets' own `recv` does (close 1007).
            with trio.move_on_after(GRACEFUL_CLOSE_TIMEOUT):
                await self._connection.aclose(1007, "invalid UTF-8 in a text frame")
            raise Dead(DisconnectCause.closed(1007, "invalid UTF-8 in a text frame"))
        try:
            return await self._connection.recv()
        except ConnectionClosed as exc:
            raise Dead(_cause(exc)) from None

    def receive_nowait(self) -> str | bytes | None:
        assembler = self._assembler
        if assembler is None or assembler.get_in_progress or self._bad_text:
            return None
        try:
            # websockets reads this queue itself (its flow control counts it); only a
            # message in one frame is taken here, fragments are left to `recv`.
            queued = assembler.send_frames._state.data
            if not queued or not queued[0].fin:
                return None
            frame = assembler.recv_frames.receive_nowait()
        except AttributeError:
            self._assembler = None
            return None
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None
        assembler.maybe_resume()
        if frame.opcode is not Opcode.TEXT:
            return bytes(frame.data)
        try:
            return bytes(frame.data).decode()
        except UnicodeDecodeError:
            self._bad_text = True
            return None

    async def send(self, message: str) -> None:
        try:
            await self._connection.send(message)
        except ConnectionClosed as exc:
            raise Dead(_cause(exc)) from None

    async def ping(self, payload: bytes) -> None:
        try:
            pong = await self._connection.ping(payload, ack_on_close=True)
        except ConnectionClosed as exc:
            raise Dead(_cause(exc)) from None
        await pong.wait()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._connection.aclose(code, reason)

    async def abort(self) -> None:
        await trio.aclose_forcefully(self._connection.stream)
        self._scope.cancel()


def _cause(exc: ConnectionClosed) -> DisconnectCause:
    """The cause of a closed connection, as the trio-websocket path reports it.

    The peer's close frame decides; without one, our own (1009 when an inbound message
    was too big); without either the connection was lost: 1006, abnormal closure.
    """
    frame = exc.rcvd if exc.rcvd is not None else exc.sent
    if frame is None:
        return DisconnectCause.closed(1006)
    if frame.code == 1009:
        return DisconnectCause.oversize(frame.reason)
    return DisconnectCause.closed(frame.code, frame.reason)
