"""The connector seam, keepalive and silence detection, bounded close.

Managers never open sockets themselves: they call a :class:`Connector` (the default
one speaks trio-websocket over TCP/TLS; the local server offers an in-memory one) and
wrap what it returns in a :class:`Link`, which owns pings and the silence clock.
:func:`connect` hands managers a transport-neutral :class:`WebSocket`: a connector may
return one (the websockets connector does), or a trio-websocket connection, which is
adapted here.
"""

from __future__ import annotations

import abc
import functools
import ipaddress
import logging
import ssl
import struct
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Protocol, final

import trio
import trio_websocket
from trio_websocket import WebSocketConnection

from ._config import ClientConfig
from ._plumbing import Counters
from ._policy import DisconnectCause

__all__ = [
    "ApiKey",
    "Connector",
    "Dead",
    "Link",
    "TrioWebSocket",
    "WebSocket",
    "cause_of",
    "check_transport_security",
    "connect",
    "discard",
    "display_url",
    "one_death",
    "open_io_nursery",
    "resolve_rpc_endpoint",
    "websocket_connector",
]

logger = logging.getLogger("trio_backtest.transport")

#: Messages trio-websocket may buffer ahead of the manager. Small, so a slow consumer
#: quickly stops the socket from being read and TCP back-pressure reaches the server.
MESSAGE_QUEUE_SIZE = 16


class WebSocket(abc.ABC):
    """One open WebSocket, whatever library speaks it: what a `Link` drives.

    Subclass it to plug in another WebSocket library; a connector may also return a
    trio-websocket connection, which `connect` wraps in a `TrioWebSocket`. Every method
    that finds the connection gone raises `Dead` with the cause.
    """

    __slots__ = ()

    @abc.abstractmethod
    async def receive(self) -> str | bytes:
        """The next message: `str` for a text frame, `bytes` for a binary one."""

    @abc.abstractmethod
    async def send(self, message: str) -> None:
        """Send one text message."""

    @abc.abstractmethod
    async def ping(self, payload: bytes) -> None:
        """Send a ping; return once its pong came, or once the connection closed."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close with code 1000 and wait for the peer's close; a no-op once closed."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Drop the connection at once and close its byte stream; never raises."""


class Connector(Protocol):
    """Opens one WebSocket; its background task runs in ``nursery``."""

    async def __call__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        headers: list[tuple[str, str]],
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
        message_queue_size: int = 1,
    ) -> WebSocket | WebSocketConnection:
        """Connect and complete the HTTP upgrade, or raise."""
        ...


_ClientStream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


async def websocket_connector(
    nursery: trio.Nursery,
    url: str,
    *,
    headers: list[tuple[str, str]],
    max_message_size: int,
    ssl_context: ssl.SSLContext | None = None,
    message_queue_size: int = 1,
) -> WebSocketConnection:
    """The default connector: TCP (+ TLS with verification for ``wss://``) via trio-websocket.

    The TLS handshake is completed before the upgrade, so a certificate that fails
    verification raises its `ssl.SSLError` at once; a refused upgrade raises
    `trio_websocket.ConnectionRejected` from this call.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"expected a ws:// or wss:// URL with a host, got {display_url(url)!r}")
    secure = parts.scheme == "wss"
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port or (443 if secure else 80))
    stream: _ClientStream = tcp
    try:
        if secure:
            context = ssl_context if ssl_context is not None else ssl.create_default_context()
            tls = trio.SSLStream(
                tcp, context, server_hostname=parts.hostname, https_compatible=True
            )
            stream = tls
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                # trio-websocket would wait forever for an upgrade that can never come.
                if isinstance(exc.__cause__, ssl.SSLError):
                    raise exc.__cause__ from None
                raise
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection: WebSocketConnection = await nursery.start(
            functools.partial(
                _run_client,
                stream,
                parts.netloc.rpartition("@")[2],
                resource,
                [(name.encode(), value.encode()) for name, value in headers],
                max_message_size=max_message_size,
                message_queue_size=message_queue_size,
            )
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return connection


async def _run_client(
    stream: _ClientStream,
    host: str,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    *,
    max_message_size: int,
    message_queue_size: int,
    task_status: trio.TaskStatus[WebSocketConnection],
) -> None:
    """Run a client WebSocket over ``stream``, in a nursery of its own.

    trio-websocket raises a refused upgrade in its reader task, which would tear down
    the caller's nursery; here it is raised from ``nursery.start`` instead.
    """
    started = False
    try:
        async with trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(
                inner,
                stream,
                host,
                resource,
                extra_headers=headers,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
            )
            started = True
            task_status.started(ws)
    except BaseExceptionGroup as group:
        rejected = None if started else group.subgroup(trio_websocket.ConnectionRejected)
        if rejected is None:
            raise
        exc: BaseException = rejected
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        raise exc from None


async def connect(
    connector: Connector,
    nursery: trio.Nursery,
    url: str,
    config: ClientConfig,
    headers: list[tuple[str, str]],
) -> WebSocket:
    """Open one WebSocket within ``config.connect_timeout``.

    Raises:
        Dead: the connection could not be made; its cause says why.
    """
    try:
        with trio.fail_after(config.connect_timeout):
            opened = await connector(
                nursery,
                url,
                headers=headers,
                max_message_size=config.max_message_size,
                ssl_context=config.ssl_context,
                message_queue_size=MESSAGE_QUEUE_SIZE,
            )
    except BaseException as exc:
        cause = cause_of(exc)
        if cause is None:
            raise
        raise Dead(cause) from None
    return opened if isinstance(opened, WebSocket) else TrioWebSocket(opened)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport_security(url: str, config: ClientConfig) -> None:
    """Refuse to send an API key in clear text to another machine.

    Raises:
        ValueError: not a ``ws://``/``wss://`` URL, or plain ``ws://`` to a host that is
            not loopback without ``allow_insecure=True``.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"expected a ws:// or wss:// URL with a host, got {display_url(url)!r}")
    if parts.scheme == "ws" and not _is_loopback(parts.hostname) and not config.allow_insecure:
        raise ValueError(
            f"refusing to send the API key over unencrypted ws:// to {parts.hostname}; "
            "use wss:// or pass ClientConfig(allow_insecure=True)"
        )


def display_url(url: str) -> str:
    """``url`` fit for a repr or a log: no credentials, no query string."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve_rpc_endpoint(control_url: str, rpc_endpoint: str) -> str:
    """The data plane's absolute ``ws(s)://`` URL.

    A path is resolved against the control URL's scheme and authority; an absolute
    ``http(s)`` URL becomes ``ws(s)``.
    """
    target = urllib.parse.urlsplit(rpc_endpoint)
    scheme = {"http": "ws", "https": "wss"}.get(target.scheme, target.scheme)
    if scheme in ("ws", "wss") and target.netloc:
        return urllib.parse.urlunsplit(target._replace(scheme=scheme))
    base = urllib.parse.urlsplit(control_url)
    path = target.path if target.path.startswith("/") else "/" + target.path
    return urllib.parse.urlunsplit((base.scheme, base.netloc, path, target.query, ""))


async def discard(ws: WebSocket | WebSocketConnection) -> None:
    """Drop a connection at once, and be sure its byte stream is closed.

    trio-websocket's ``aclose()`` returns early once the peer has closed, leaving the
    underlying stream (a TCP socket) open until garbage collection; close it here.
    """
    if isinstance(ws, WebSocket):
        await ws.abort()
        return
    await trio.aclose_forcefully(ws)
    stream = getattr(ws, "_stream", None)
    if isinstance(stream, trio.abc.AsyncResource):
        await trio.aclose_forcefully(stream)


class Dead(Exception):
    """The connection is gone; ``cause`` says why."""

    def __init__(self, cause: DisconnectCause) -> None:
        super().__init__(str(cause))
        self.cause = cause


@contextmanager
def one_death() -> Iterator[None]:
    """Let one `Dead` out of a connection's nursery, however many tasks saw the drop.

    The reader and a sender can both see the same drop; and when the drop meets a
    cancellation, the other tasks' `trio.Cancelled` comes along. Several `Dead` become the
    first one; `Dead` beside `trio.Cancelled` gives way to the cancellation, which is what
    the manager must act on. Any other group is left alone.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        deaths, rest = group.split(Dead)
        if deaths is None:
            raise
        if rest is not None:
            _, other = rest.split(trio.Cancelled)
            if other is not None:
                raise
            raise rest from None
        first: BaseException = deaths
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


def cause_of(exc: BaseException) -> DisconnectCause | None:
    """Classify a connect/receive/send failure; ``None`` for exceptions that are not one."""
    if isinstance(exc, Dead):
        return exc.cause
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return DisconnectCause.http_status(exc.status_code)
    if isinstance(exc, trio_websocket.ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return DisconnectCause.closed(None)
        if reason.code == 1009:
            return DisconnectCause.oversize(reason.reason or "")
        return DisconnectCause.closed(reason.code, reason.reason or "")
    if isinstance(exc, trio.TooSlowError):
        return DisconnectCause.timeout("connect")
    if isinstance(exc, trio_websocket.HandshakeError | OSError | trio.BrokenResourceError):
        text = str(exc)
        detail = type(exc).__name__ if not text else f"{type(exc).__name__}: {text}"
        return DisconnectCause.connect_failed(detail[:200])
    return None


@final
class Link:
    """One live WebSocket with keepalive pings and a silence clock.

    Silence is only counted while the owner waits in :meth:`receive`: any inbound
    message or pong is life, and time spent elsewhere (handing events to a slow
    consumer) never counts, so a slow consumer never looks like a dead server.
    """

    def __init__(
        self, ws: WebSocket, config: ClientConfig, number: int, counters: Counters
    ) -> None:
        self.ws = ws
        self.number = number
        """1 for the first connection of a manager, 2 for the next, ..."""
        self._config = config
        self._waiting: trio.CancelScope | None = None
        self._pings = 0
        self._counters = counters

    def _life(self) -> None:
        if self._waiting is not None:
            self._waiting.deadline = trio.current_time() + self._config.keepalive_miss_deadline

    async def keepalive(self) -> None:
        """Ping every ``keepalive_interval``; a pong pushes the silence deadline back."""
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(self._config.keepalive_interval)
                nursery.start_soon(self._ping_once)

    async def _ping_once(self) -> None:
        self._pings += 1
        try:
            await self.ws.ping(struct.pack("!Q", self._pings))
        except Dead:
            return
        self._life()

    async def probe(self, within: float) -> None:
        """Prove the peer is there: a ping answered within ``within`` seconds.

        Raises:
            Dead: no pong in time (the connection is silently gone), or it closed.
        """
        self._pings += 1
        with trio.move_on_after(within):
            await self.ws.ping(struct.pack("!Q", self._pings))
            self._life()
            return
        raise Dead(DisconnectCause.keepalive())

    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            Dead: the peer closed, the connection broke, or it stayed silent for
                ``keepalive_miss_deadline`` while we were waiting.
        """
        deadline = trio.current_time() + self._config.keepalive_miss_deadline
        with trio.move_on_at(deadline) as scope:
            self._waiting = scope
            try:
                message = await self.ws.receive()
            finally:
                self._waiting = None
            self._counters.messages += 1
            self._counters.bytes += len(message)
            return message
        raise Dead(DisconnectCause.keepalive())

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            Dead: the connection is closed.
        """
        await self.ws.send(text)


@final
class TrioWebSocket(WebSocket):
    """A trio-websocket connection (or a stand-in with its methods) as a `WebSocket`."""

    __slots__ = ("_ws",)

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    def __repr__(self) -> str:
        return f"TrioWebSocket({self._ws!r})"

    async def receive(self) -> str | bytes:
        try:
            message: str | bytes = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise Dead(_closed_cause(exc)) from None
        return message

    async def send(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise Dead(_closed_cause(exc)) from None

    async def ping(self, payload: bytes) -> None:
        try:
            await self._ws.ping(payload)
        except trio_websocket.ConnectionClosed as exc:
            raise Dead(_closed_cause(exc)) from None

    async def aclose(self) -> None:
        await self._ws.aclose()

    async def abort(self) -> None:
        await discard(self._ws)


def _closed_cause(exc: trio_websocket.ConnectionClosed) -> DisconnectCause:
    cause = cause_of(exc)
    assert cause is not None
    return cause


@final
class _ShieldHolder:
    scope: trio.CancelScope | None = None


async def _host_io(holder: _ShieldHolder, *, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    with trio.CancelScope(shield=True) as scope:
        holder.scope = scope
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


@asynccontextmanager
async def open_io_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery for sockets' background tasks that outer cancellation does not reach.

    A manager being cancelled still needs its socket's reader task for the graceful
    close (the ``success`` reply, the close frame); those tasks end only when this
    block exits.
    """
    holder = _ShieldHolder()
    async with trio.open_nursery() as outer:
        io = await outer.start(_host_io, holder)
        try:
            yield io
        finally:
            assert holder.scope is not None
            holder.scope.cancel()


@final
class ApiKey:
    """An API key that never shows itself in a repr, a log record or a traceback."""

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str | ApiKey) -> None:
        if isinstance(value, ApiKey):
            value = value.reveal()
        if not isinstance(value, str) or not value:
            raise ValueError("the API key must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one header that carries it."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__
