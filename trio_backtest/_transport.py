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
import math
import ssl
import struct
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final, Protocol, cast, final

import h11
import trio
import trio_websocket
from trio_websocket import WebSocketConnection
from wsproto.utilities import ProtocolError as WsprotoError

from ._config import ClientConfig
from ._plumbing import Counters
from ._policy import DisconnectCause

__all__ = [
    "ApiKey",
    "Connector",
    "Dead",
    "Link",
    "TrioWebSocket",
    "UpgradeFailed",
    "WebSocket",
    "cause_of",
    "check_transport_security",
    "connect",
    "discard",
    "describe",
    "display_url",
    "one_death",
    "open_client_websocket",
    "open_io_nursery",
    "resolve_rpc_endpoint",
    "tls_failure_as_itself",
    "websocket_connector",
]

logger = logging.getLogger("trio_backtest.transport")

#: Messages trio-websocket may buffer ahead of the manager. Small, so a slow consumer
#: quickly stops the socket from being read and TCP back-pressure reaches the server.
MESSAGE_QUEUE_SIZE = 16

#: Bytes trio-websocket asks the socket for at a time (its default is 4 KiB: about two
#: notifications). A busy stream then parses a whole read's messages per wake-up.
RECEIVE_BUFFER_SIZE = 64 * 1024


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

    def receive_nowait(self) -> str | bytes | None:
        """The next message if one is already buffered, else ``None``; never waits.

        The fast path of a busy stream: no checkpoint, no task switch. ``None`` is always
        a correct answer (`receive` then waits, and reports a close); the default is
        ``None``, so a `WebSocket` need not implement it.
        """
        return None

    @abc.abstractmethod
    async def send(self, message: str) -> None:
        """Send one text message."""

    @abc.abstractmethod
    async def ping(self, payload: bytes) -> None:
        """Send a ping; return once its pong came, or once the connection closed."""

    @abc.abstractmethod
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and wait for the peer's close; a no-op once closed."""

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
    verification, or a peer that does not speak TLS, raises its `ssl.SSLError` at once; a
    refused upgrade raises `trio_websocket.ConnectionRejected` and any other failure of
    the upgrade `UpgradeFailed` from this call.
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
            # trio-websocket would wait forever for an upgrade that can never come.
            with tls_failure_as_itself():
                await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return await open_client_websocket(
        nursery,
        stream,
        url,
        headers=headers,
        max_message_size=max_message_size,
        message_queue_size=message_queue_size,
    )


@contextmanager
def tls_failure_as_itself() -> Iterator[None]:
    """Let a failed TLS handshake out as its `ssl.SSLError`, not as the broken stream.

    Trio reports it as a `trio.BrokenResourceError` caused by the `ssl.SSLError`;
    `cause_of` classifies the latter as a final TLS failure.
    """
    try:
        yield
    except trio.BrokenResourceError as exc:
        if isinstance(exc.__cause__, ssl.SSLError):
            raise exc.__cause__ from None
        raise


async def open_client_websocket(
    nursery: trio.Nursery,
    stream: trio.abc.Stream,
    url: str,
    *,
    headers: list[tuple[str, str]],
    max_message_size: int,
    message_queue_size: int = 1,
) -> WebSocketConnection:
    """Open a client WebSocket to ``url`` over ``stream``, already connected to its server.

    ``stream`` may be TCP, TLS or one end of a ``memory_pipe_pair``; the connection's
    background task runs in ``nursery``. The upgrade asks ``url``'s host (without user
    info) for its path and query, and sends ``headers``. If the upgrade fails, ``stream``
    is closed.

    Raises:
        trio_websocket.ConnectionRejected: The server refused the upgrade.
        UpgradeFailed: Any other failure of the upgrade: a malformed answer, or the stream
            ending first.
    """
    parts = urllib.parse.urlsplit(url)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
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


class UpgradeFailed(Exception):
    """The HTTP upgrade failed without an HTTP status: a malformed or wrong answer (a
    garbage status line, a bad ``Sec-WebSocket-Accept``), or the connection ended first."""


@final
class _UpgradeWatch(trio.abc.Stream):
    """A client stream that reports its end before the upgrade completed as `UpgradeFailed`.

    trio-websocket would otherwise wait for an answer that can never come, until the
    connect timeout. Once ``upgraded`` is set it only forwards.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.upgraded = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Forward; the end of the stream during the upgrade is an `UpgradeFailed`."""
        try:
            data = await self._inner.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if self.upgraded:
                raise
            raise UpgradeFailed(f"the connection broke during the upgrade ({exc})") from None
        if not data and not self.upgraded:
            raise UpgradeFailed("the server closed the connection during the upgrade")
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Forward."""
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Forward."""
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Forward."""
        await self._inner.aclose()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _innermost_protocol_error(exc: BaseException) -> BaseException:
    """The h11/wsproto error deepest in ``exc``'s context chain (else ``exc``).

    On a malformed answer the error that escapes is trio-websocket failing to answer it
    as if it were a server; h11's error at the bottom of the chain says what was wrong.
    """
    found, seen = exc, 0
    current: BaseException | None = exc
    while current is not None and seen < 16:
        if isinstance(current, WsprotoError | h11.ProtocolError):
            found = current
        current, seen = current.__context__, seen + 1
    return found


def describe(exc: BaseException) -> str:
    """An exception's type and text, in one line of at most 200 characters."""
    text = str(exc)
    return (type(exc).__name__ if not text else f"{type(exc).__name__}: {text}")[:200]


async def _run_client(
    stream: trio.abc.Stream,
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
    the caller's nursery; here it is raised from ``nursery.start`` instead. Every other
    failure of the upgrade (h11 and wsproto errors on a malformed answer, the connection
    ending first) comes out as one `UpgradeFailed`.
    """
    watched = _UpgradeWatch(stream)
    started = False
    try:
        async with trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(
                inner,
                cast(Any, watched),
                host,
                resource,
                extra_headers=headers,
                message_queue_size=message_queue_size,
                max_message_size=max_message_size,
                receive_buffer_size=RECEIVE_BUFFER_SIZE,
            )
            watched.upgraded = started = True
            task_status.started(ws)
    except BaseExceptionGroup as group:
        if started:
            raise
        rejected = group.subgroup(trio_websocket.ConnectionRejected)
        if rejected is not None:
            raise _first_leaf(rejected) from None
        failed, _ = group.split(lambda e: isinstance(e, Exception))
        if failed is None:
            raise
        leaf = _first_leaf(failed)
        if isinstance(leaf, UpgradeFailed):
            raise leaf from None
        detail = describe(_innermost_protocol_error(leaf))
        raise UpgradeFailed(f"a malformed answer ({detail})") from None


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


#: The schemes an ``rpcEndpoint`` may have, and the WebSocket scheme each stands for.
_RPC_SCHEMES: Final = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}


def resolve_rpc_endpoint(
    control_url: str, rpc_endpoint: str, *, allow_insecure: bool = False
) -> str:
    """The data plane's absolute ``ws(s)://`` URL, from the server's ``rpcEndpoint``.

    A path is resolved against the control URL's scheme and authority; an absolute
    ``http(s)`` URL becomes ``ws(s)``; dot segments are removed. Credentials are dropped:
    the data plane takes none (protocol.md §1) and keeping them would only risk showing
    them in a repr or a log.

    Raises:
        ValueError: a scheme other than ``ws``/``wss``/``http``/``https``, no host, or a
            plain ``ws://`` data plane under a ``wss://`` control URL without
            ``allow_insecure`` (the message never repeats the endpoint itself).
    """
    base = urllib.parse.urlsplit(control_url)
    target = urllib.parse.urlsplit(rpc_endpoint)
    if target.scheme:
        scheme = _RPC_SCHEMES.get(target.scheme.lower())
        if scheme is None:
            raise ValueError(
                f"rpcEndpoint has the scheme {target.scheme[:16]!r}; "
                "expected ws, wss, http, https or a path"
            )
    else:
        scheme = base.scheme
    # An absolute URL names its own host; only a path borrows the control URL's.
    netloc = (target.netloc if target.scheme or target.netloc else base.netloc).rpartition("@")[2]
    if not urllib.parse.urlsplit(f"{scheme}://{netloc}").hostname:
        raise ValueError("rpcEndpoint has no host")
    if base.scheme == "wss" and scheme == "ws" and not allow_insecure:
        raise ValueError(
            "rpcEndpoint would move the data plane from wss:// to plain ws://; "
            "pass ClientConfig(allow_insecure=True) to allow it"
        )
    # urljoin removes dot segments (RFC 3986 §5.2.4) and roots a relative path.
    path = urllib.parse.urlsplit(urllib.parse.urljoin("ws://host/", target.path)).path
    return urllib.parse.urlunsplit((scheme, netloc, path, target.query, ""))


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
        raise _first_leaf(deaths) from None


def cause_of(exc: BaseException) -> DisconnectCause | None:
    """Classify a connect/receive/send failure; ``None`` for exceptions that are not one.

    A failed TLS handshake is its own (final) kind; anything else that went wrong before
    the WebSocket was open — refused or reset connections, DNS, a malformed answer to the
    upgrade, h11 and wsproto errors included — is a failed connect, retried per the
    policy. A group of such failures (a connector's own nursery) is classified by its
    first; a group holding a cancellation is not a failure.
    """
    if isinstance(exc, BaseExceptionGroup):
        rest = exc.split(Exception)[1]
        if rest is not None:
            return None
        return cause_of(_first_leaf(exc))
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
    if isinstance(exc, ssl.SSLError):
        return DisconnectCause.tls(describe(exc))
    if isinstance(exc, UpgradeFailed):
        return DisconnectCause.connect_failed(f"upgrade failed: {exc}")
    if isinstance(exc, h11.ProtocolError | WsprotoError):
        return DisconnectCause.connect_failed(f"upgrade failed: {describe(exc)}")
    if isinstance(exc, trio_websocket.HandshakeError | OSError | trio.BrokenResourceError):
        return DisconnectCause.connect_failed(describe(exc))
    return None


@final
class _Reply:
    """A reply `Link.awaiting_reply` waits for, and the waiting time it has left."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.remaining = seconds


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
        self._reply: _Reply | None = None
        self._reply_deadline = math.inf
        self._pings = 0
        self._counters = counters

    def _life(self) -> None:
        if self._waiting is not None:
            silence = trio.current_time() + self._config.keepalive_miss_deadline
            self._waiting.deadline = min(silence, self._reply_deadline)

    @contextmanager
    def awaiting_reply(self, what: str, seconds: float) -> Iterator[None]:
        """Within this block, waiting in `receive` for ``seconds`` in all is a timeout.

        Only time spent waiting for a frame counts: time the owner spends handing what
        arrived to a slow user does not (client.md §4: a slow consumer never causes a
        false "dead" verdict).

        Raises:
            Dead: `receive` waited ``seconds`` in all: a timeout waiting for ``what``.
        """
        self._reply = _Reply(what, seconds)
        try:
            yield
        finally:
            self._reply = None

    async def keepalive(self, nursery: trio.Nursery) -> None:
        """Ping every ``keepalive_interval`` while the owner waits for a message.

        A pong pushes the silence deadline back. While the owner is busy handing a
        message to a slow user no silence is counted, so no ping is needed — and none is
        sent: a ping that meets a peer gone after its close frame aborts trio-websocket's
        connection, which then drops the message its reader holds for the full queue.
        Each ping waits for its pong in ``nursery`` (the connection's, so a connection
        costs no nursery of its own for it).
        """
        while True:
            await trio.sleep(self._config.keepalive_interval)
            if self._waiting is not None:
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

    def receive_nowait(self) -> str | bytes | None:
        """The next message if one is already buffered, else ``None`` (see `receive`).

        No silence is counted: nothing was waited for.
        """
        message = self.ws.receive_nowait()
        if message is not None:
            self._counters.messages += 1
            self._counters.bytes += len(message)
        return message

    async def receive(self) -> str | bytes:
        """The next message.

        Raises:
            Dead: the peer closed, the connection broke, it stayed silent for
                ``keepalive_miss_deadline`` while we were waiting, or the reply of an
                `awaiting_reply` block did not come in time.
        """
        began = trio.current_time()
        reply = self._reply
        self._reply_deadline = math.inf if reply is None else began + reply.remaining
        silence = began + self._config.keepalive_miss_deadline
        with trio.move_on_at(min(silence, self._reply_deadline)) as scope:
            self._waiting = scope
            try:
                message = await self.ws.receive()
            finally:
                self._waiting = None
                if reply is not None:
                    reply.remaining -= trio.current_time() - began
            self._counters.messages += 1
            self._counters.bytes += len(message)
            return message
        if reply is not None and trio.current_time() >= self._reply_deadline:
            raise Dead(DisconnectCause.timeout(reply.what))
        raise Dead(DisconnectCause.keepalive())

    async def close(self, code: int, reason: str) -> None:
        """Close with ``code``, waiting at most ``graceful_close_timeout`` for the peer."""
        with trio.move_on_after(self._config.graceful_close_timeout):
            await self.ws.aclose(code, reason)

    async def send(self, text: str) -> None:
        """Send one text message.

        Raises:
            Dead: the connection is closed.
        """
        await self.ws.send(text)


@final
class TrioWebSocket(WebSocket):
    """A trio-websocket connection (or a stand-in with its methods) as a `WebSocket`."""

    __slots__ = ("_queue", "_ws")

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        # trio-websocket keeps received messages in a memory channel that ``get_message``
        # reads; taking a buffered one without a checkpoint is `receive_nowait`'s fast
        # path. Only a genuine connection has it (a stand-in that wraps one must keep
        # its own reading behaviour), and a library without it just takes the slow path.
        queue = getattr(ws, "_recv_channel", None) if type(ws) is WebSocketConnection else None
        self._queue: trio.MemoryReceiveChannel[str | bytes] | None = (
            queue if isinstance(queue, trio.MemoryReceiveChannel) else None
        )
        if self._queue is not None:
            _eager_reader(ws)

    def __repr__(self) -> str:
        return f"TrioWebSocket({self._ws!r})"

    async def receive(self) -> str | bytes:
        try:
            message: str | bytes = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise Dead(_closed_cause(exc)) from None
        return message

    def receive_nowait(self) -> str | bytes | None:
        if self._queue is None:
            return None
        try:
            return self._queue.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None  # nothing buffered; or closed, which `receive` reports with its cause

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

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason or None)

    async def abort(self) -> None:
        await discard(self._ws)


@final
class _EagerSend:
    """The sending end of trio-websocket's message queue, minus the checkpoint when it has room.

    trio-websocket's reader task hands each message over with ``await send``, which
    yields to the scheduler every time: a busy stream then costs a task switch per
    message, however many arrived in one read. With room in the queue this takes the
    message at once, so the reader queues a whole read's messages and the manager takes
    them in one go (`TrioWebSocket.receive_nowait`); a full queue still blocks the reader
    (back-pressure reaches the server as before).
    """

    __slots__ = ("_inner",)

    def __init__(self, inner: trio.MemorySendChannel[str | bytes]) -> None:
        self._inner = inner

    async def send(self, value: str | bytes) -> None:
        try:
            self._inner.send_nowait(value)
        except trio.WouldBlock:
            await self._inner.send(value)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def _eager_reader(ws: WebSocketConnection) -> None:
    """Give ``ws``'s reader task an `_EagerSend` (if its queue is where this version keeps it)."""
    channel = getattr(ws, "_send_channel", None)
    if isinstance(channel, trio.MemorySendChannel):
        # Only ``send`` (and ``aclose`` through the wrapper) is used on it by the reader.
        ws._send_channel = cast(Any, _EagerSend(channel))


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
