"""The running server: connection routing, TCP listener, memory connector, lifecycle."""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal, NoReturn, TypeAlias, final

import orjson
import trio
import trio_websocket

from .._transport import open_client_websocket
from ._config import Backpressure, ChaosConfig, ServerConfig
from ._controlplane import ControlConnection
from ._controls import ConnHandle, FaultControls
from ._core import ServerCore
from ._dataplane import DataConnection
from ._faults import FaultStream, Link
from ._http import HttpConnection, HttpRequest, PrefixedStream, TooLarge
from ._ledger import Ledger, LedgerConfig
from ._memory import memory_pipe_pair
from ._memory_http import MemoryHttpTransport
from ._rpc import answer_rpc, method_of
from ._session import Session, SessionState
from ._stats import Delivery, RpcCall, ServerStatistics

__all__ = ["LocalServer", "MemoryConnector", "open_local_server", "open_server", "serve_backtest"]

logger = logging.getLogger("trio_backtest.server")

#: Seconds a server-initiated close waits for the client's close frame.
_CLOSE_GRACE = 2.0
#: Seconds a shutting-down server gives its connections to close with 1001.
_SHUTDOWN_GRACE = 2.0
_CONTROL_PATH = "/backtest"
_RANGES_PATH = "/available-ranges"
_JSON = "application/json"


def _route(path: str) -> tuple[Literal["control", "data"] | None, str | None]:
    if path == _CONTROL_PATH:
        return "control", None
    prefix = _CONTROL_PATH + "/"
    if path.startswith(prefix):
        session_id = urllib.parse.unquote(path[len(prefix) :])
        if session_id and "/" not in session_id:
            return "data", session_id
    return None, None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


async def _close_websocket(ws: trio_websocket.WebSocketConnection, code: int, reason: str) -> None:
    # Shielded (and bounded): the connection's own tasks end as soon as the close begins,
    # and cancelling this with them would turn the close frame into an abrupt loss.
    with trio.move_on_after(_CLOSE_GRACE) as scope:
        scope.shield = True
        await ws.aclose(code, reason or None)


async def handle_connection(core: ServerCore, raw: trio.abc.Stream, link: Link | None) -> None:
    """Serve one client connection, TCP or memory alike; never raises."""
    stream = FaultStream(raw, link=link if link is not None else core.faults.link)
    try:
        await _serve_stream(core, stream)
    except Exception:
        logger.exception("a connection handler failed")
    finally:
        await trio.aclose_forcefully(stream)


async def _serve_stream(core: ServerCore, stream: FaultStream) -> None:
    config = core.config
    http = HttpConnection(stream)
    # The first request head must come within the handshake timeout; later ones on a
    # kept-alive connection within the keep-alive timeout.
    timeout = config.handshake_timeout
    while True:
        request: HttpRequest | None = None
        with trio.move_on_after(timeout):
            request = await http.next_request()
        if request is None:
            return
        if request.is_websocket_upgrade:
            await _serve_upgrade(core, stream, request, http.upgrade_bytes(request))
            return
        if not await _serve_plain(core, stream, http, request) or not http.next_cycle():
            return
        timeout = config.http_keepalive_timeout


async def _serve_plain(
    core: ServerCore, stream: FaultStream, http: HttpConnection, request: HttpRequest
) -> bool:
    """Answer one plain HTTP request; whether the connection may serve another."""
    path, method = request.path, request.method
    plane, session_id = _route(path)
    if path == "/health":
        if method not in ("GET", "HEAD"):
            await http.respond(405, b"method not allowed\n", close=True)
            return False
        core.counters.health_checks += 1
        await http.respond(200, b"ok", close=True, head_only=method == "HEAD")
        return False
    if path == _RANGES_PATH:
        if method != "GET":
            await http.respond(405, b"method not allowed\n", close=True)
            return False
        if core.owner_of_key(request.header("x-api-key")) is None:
            return await http.respond(401, b"unauthorized\n")
        ranges = orjson.dumps(core.available_ranges())
        return await http.respond(200, ranges, content_type=_JSON)
    if plane == "data" and method == "POST":
        assert session_id is not None
        return await _serve_rpc(core, stream, http, request, session_id)
    if plane is not None:
        await http.respond(426, b"this endpoint speaks WebSocket\n", close=True)
    else:
        await http.respond(404, b"not found\n", close=True)
    return False


async def _serve_rpc(
    core: ServerCore,
    stream: FaultStream,
    http: HttpConnection,
    request: HttpRequest,
    session_id: str,
) -> bool:
    """Answer one JSON-RPC request on a session's path (protocol.md §6)."""
    config = core.config
    core.counters.rpc_requests += 1
    calls = core.rpc_calls_of(session_id)
    headers = dict(request.headers)

    def record(method: str | None, status: int, fault: str | None = None) -> None:
        if calls is not None:
            calls.append(RpcCall(method, headers, status, fault))

    length = request.header("content-length")
    if length is not None and length.isdigit() and int(length) > config.max_http_body:
        record(None, 413)
        await http.respond(413, b"request body too large\n", close=True)
        return False
    body: bytes | None = None
    try:
        with trio.move_on_after(config.handshake_timeout):
            body = await http.read_body(config.max_http_body)
    except TooLarge:
        record(None, 413)
        await http.respond(413, b"request body too large\n", close=True)
        return False
    if body is None:
        record(None, 0)
        return False
    method = method_of(body)
    fault, delay = core.faults.take_http(session_id)
    if fault == "drop":
        record(method, 0, fault)
        stream.drop()
        return False
    if fault == "bad_gateway":
        record(method, 502, fault)
        return await http.respond(502, b"")
    if delay:
        await trio.sleep(delay)
    session = core.sessions.get(session_id)
    if session is None:
        status = 502 if core.ended(session_id) else 404
        record(method, status, fault)
        if fault == "lose_answer":
            stream.drop()
            return False
        return await http.respond(status, b"" if status == 502 else b"session not found\n")
    if session.state in (SessionState.COMPLETED, SessionState.FAILED):
        # The hosted service stops serving a finished session's RPC with an empty 502.
        record(method, 502, fault)
        if fault == "lose_answer":
            stream.drop()
            return False
        return await http.respond(502, b"")
    try:
        answer = answer_rpc(session, body)
    except Exception:
        logger.exception("a JSON-RPC request failed inside the server")
        answer = orjson.dumps(
            {"jsonrpc": "2.0", "error": {"code": -32603, "message": "Internal error"}, "id": None}
        )
    if fault == "lose_answer":
        record(method, 0, fault)
        stream.drop()
        return False
    record(method, 200)
    return await http.respond(200, answer, content_type=_JSON)


async def _serve_upgrade(
    core: ServerCore, stream: FaultStream, request: HttpRequest, head: bytes
) -> None:
    config = core.config
    plane, session_id = _route(request.path)
    handle: ConnHandle | None = None
    try:
        async with trio.open_nursery() as nursery:
            ws_request: trio_websocket.WebSocketRequest | None = None
            with trio.move_on_after(config.handshake_timeout):
                ws_request = await trio_websocket.wrap_server_stream(
                    nursery, PrefixedStream(stream, head), max_message_size=config.max_message_size
                )
            if ws_request is None:
                nursery.cancel_scope.cancel()
                return
            status, owner, session = _admit(core, plane, session_id, ws_request.headers)
            if status is not None:
                core.counters.upgrades_refused[str(status)] += 1
                await ws_request.reject(status, body=f"{status}\n".encode())
                nursery.cancel_scope.cancel()
                return
            ws = await ws_request.accept()
            assert plane is not None
            handle = _accepted(core, stream, ws, nursery, plane)
            await _serve_websocket(core, handle, ws, owner, session)
            # Let the WebSocket's own tasks finish the close handshake (cancelling them
            # midway would leave a close waiting for nothing), but only for so long.
            nursery.cancel_scope.deadline = trio.current_time() + _CLOSE_GRACE
    finally:
        # Only now is the connection over, close handshake included.
        if handle is not None:
            core.faults.unregister(handle)
            core.counters.connections_open[handle.plane] -= 1
            core.connection_finished()


def _admit(
    core: ServerCore,
    plane: Literal["control", "data"] | None,
    session_id: str | None,
    headers: list[tuple[bytes, bytes]],
) -> tuple[int | None, int, Session | None]:
    """Decide an upgrade: ``(refusal status or None, key owner, data-plane session)``."""
    if plane is None:
        return 404, -1, None
    refusal = core.faults.take_refusal(plane)
    if refusal is not None:
        return refusal, -1, None
    if plane == "control":
        owner = core.owner_of_key(_header(headers, b"x-api-key"))
        if owner is None:
            return 401, -1, None
        return None, owner, None
    session = core.sessions.get(session_id or "")
    if session is None:
        return 404, -1, None
    return None, session.owner, session


def _accepted(
    core: ServerCore,
    stream: FaultStream,
    ws: trio_websocket.WebSocketConnection,
    nursery: trio.Nursery,
    plane: Literal["control", "data"],
) -> ConnHandle:
    def close(code: int, reason: str) -> None:
        with contextlib.suppress(RuntimeError):  # the connection already finished
            nursery.start_soon(_close_websocket, ws, code, reason)

    handle = ConnHandle(core.next_connection_number(), plane, stream, nursery, close)
    core.faults.register(handle)
    core.counters.connections_accepted += 1
    core.counters.connections_open[plane] += 1
    return handle


async def _serve_websocket(
    core: ServerCore,
    handle: ConnHandle,
    ws: trio_websocket.WebSocketConnection,
    owner: int,
    session: Session | None,
) -> None:
    try:
        if handle.plane == "control":
            await ControlConnection(core, handle, ws, owner).serve()
        else:
            assert session is not None
            if session.gone:
                await _close_websocket(ws, 4404, "session not found")
                return
            handle.session_ids = frozenset({session.id})
            await DataConnection(core, handle, ws, session).serve()
    finally:
        with trio.move_on_after(_CLOSE_GRACE) as scope:
            scope.shield = True
            await ws.aclose()


WrapStream: TypeAlias = Callable[[trio.abc.HalfCloseableStream, str], trio.abc.Stream]
"""Given the server's end of a new in-memory connection and the URL the client asked for,
the stream the server should serve instead (e.g. one that records what it receives)."""


@final
class MemoryConnector:
    """Connects a client to the server over an in-memory stream pair (no sockets at all).

    Call it like trio-websocket's ``connect_websocket_url``: it returns an open client
    :class:`trio_websocket.WebSocketConnection` whose background task runs in ``nursery``,
    or raises :exc:`trio_websocket.ConnectionRejected` for a refused upgrade. Each direction
    buffers a bounded number of bytes, so a client that stops reading slows the server down
    as it would over TCP. The client's end of the connection is the one the TCP connector
    uses, so a test through it exercises the client's real upgrade path.
    """

    def __init__(
        self,
        core: ServerCore,
        link: Link | None,
        buffer_size: int,
        wrap_stream: WrapStream | None = None,
    ) -> None:
        self._core = core
        self._link = link
        self._buffer_size = buffer_size
        self._wrap_stream = wrap_stream

    def __repr__(self) -> str:
        return f"MemoryConnector(link={self._link!r})"

    async def __call__(
        self,
        nursery: trio.Nursery,
        url: str,
        *,
        headers: list[tuple[str, str]],
        max_message_size: int,
        ssl_context: ssl.SSLContext | None = None,
        message_queue_size: int = 1,
    ) -> trio_websocket.WebSocketConnection:
        """Open a WebSocket to ``url`` on this server.

        ``ssl_context`` is accepted for signature compatibility and ignored: memory streams
        need no TLS.

        Raises:
            ValueError: ``url`` is not a ``ws://``/``wss://`` URL.
            ConnectionRefusedError: the server is no longer running.
            trio_websocket.ConnectionRejected: the server refused the upgrade.
            UpgradeFailed: any other failure of the upgrade (the server's end closed first).
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"expected a ws:// or wss:// URL, got {url!r}")
        client_stream, server_stream = memory_pipe_pair(self._buffer_size)
        served: trio.abc.Stream = server_stream
        if self._wrap_stream is not None:
            served = self._wrap_stream(server_stream, url)
        try:
            self._core.nursery.start_soon(handle_connection, self._core, served, self._link)
        except RuntimeError:
            raise ConnectionRefusedError("the local server is not running") from None
        return await open_client_websocket(
            nursery,
            client_stream,
            url,
            headers=headers,
            max_message_size=max_message_size,
            message_queue_size=message_queue_size,
        )


@final
class LocalServer:
    """A running local backtest server (see :func:`open_local_server`)."""

    def __init__(self, core: ServerCore, url: str) -> None:
        self._core = core
        self._url = url

    def __repr__(self) -> str:
        return f"LocalServer(url={self._url!r}, keys=<{len(self._core.config.api_keys)} hidden>)"

    @property
    def url(self) -> str:
        """The control URL, ``ws://host:port/backtest``."""
        return self._url

    @property
    def api_key(self) -> str:
        """The first accepted API key."""
        return self._core.config.api_keys[0]

    @property
    def config(self) -> ServerConfig:
        """The server's configuration."""
        return self._core.config

    @property
    def ledger(self) -> Ledger:
        """The synthetic ledger the server executes."""
        return self._core.ledger

    @property
    def faults(self) -> FaultControls:
        """Live fault controls."""
        return self._core.faults

    def set_link(self, link: Link | None) -> None:
        """Shape every connection accepted from now on through ``link`` (``None``: none)."""
        self._core.faults.set_link(link)

    def statistics(self) -> ServerStatistics:
        """A frozen snapshot of the server's counters."""
        return self._core.statistics()

    def session_ids(self) -> tuple[str, ...]:
        """Ids of the live sessions and sub-sessions, oldest first."""
        return tuple(self._core.sessions)

    def session_state(self, session_id: str) -> str | None:
        """A live session's state name (``ready``, ``running``, …), ``None`` when gone."""
        session = self._core.sessions.get(session_id)
        return None if session is None else session.state.value

    def executed_slots(self, session_id: str) -> list[int]:
        """The slots a session fully executed, in order (kept after the session ends)."""
        return list(self._core.executed_slots_of(session_id))

    def delivered(self, session_id: str) -> tuple[Delivery, ...]:
        """Every frame the server wrote for a session (or a batch's own messages), in order.

        Empty when the server runs with ``record=False``.
        """
        return self._core.delivered(session_id)

    def rpc_calls(self, session_id: str) -> tuple[RpcCall, ...]:
        """Every HTTP JSON-RPC request to a session's path, in arrival order.

        Empty when the server runs with ``record=False``.
        """
        return tuple(self._core.rpc_calls_of(session_id, create=False) or ())

    def user_transactions(self, session_id: str) -> tuple[str, ...]:
        """Signatures of the transactions executed for a session's user (``sendTransaction``
        and a continue's ``transactions``), one per execution, in execution order."""
        return tuple(self._core.user_transactions_of(session_id))

    def connector(
        self,
        *,
        link: Link | None = None,
        buffer_size: int = 64 * 1024,
        wrap_stream: WrapStream | None = None,
    ) -> MemoryConnector:
        """An in-memory client connector to this server.

        Args:
            link: A shared link every connection of this connector passes through (the
                server's ``set_link`` link when ``None``).
            buffer_size: Bytes each direction of a connection buffers.
            wrap_stream: Called with the server's end of each new connection and the URL
                the client asked for; the server serves the stream it returns instead
                (e.g. a tap that records every byte the server receives).
        """
        return MemoryConnector(self._core, link, buffer_size, wrap_stream)

    def http_transport(
        self, *, link: Link | None = None, buffer_size: int = 64 * 1024
    ) -> MemoryHttpTransport:
        """An httpx transport to this server's HTTP side over in-memory streams.

        Pass it as ``httpx.AsyncClient(transport=...)`` to call a session's JSON-RPC (or
        ``/available-ranges``) with no sockets, e.g. under ``MockClock``. The URL's host does
        not matter; its path does.

        Args:
            link: A shared link every connection passes through (the server's ``set_link``
                link when ``None``).
            buffer_size: Bytes each direction of a connection buffers.
        """
        core = self._core

        def start(stream: trio.abc.Stream) -> None:
            core.nursery.start_soon(handle_connection, core, stream, link)

        return MemoryHttpTransport(start, buffer_size)

    async def _shutdown(self) -> None:
        for conn in self._core.faults.live():
            conn.close(1001, "server shutting down")
        with trio.move_on_after(_SHUTDOWN_GRACE) as scope:
            scope.shield = True
            await self._core.wait_connections_finished()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def open_local_server(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 0,
    api_keys: tuple[str, ...] | list[str] = ("local-dev-key",),
    transactions_per_slot: float = 20.0,
    bundle_size: int = 100,
    startup_delay: float = 0.0,
    snake_case: bool = False,
    backpressure: Backpressure = "block",
    queue_size: int = 4096,
    max_message_size: int = 16 * 1024 * 1024,
    tcp: bool = True,
    chaos: ChaosConfig | None = None,
    program_count: int = 8,
    account_count: int = 64,
    replay_window: int = 100,
    completed_linger: float = 1.0,
    max_sessions_per_key: int = 64,
    record: bool = True,
    legacy_sessions_created: bool = False,
) -> AsyncIterator[LocalServer]:
    """Run a local backtest server for the duration of the block.

    Closing the block closes every connection with 1001 and ends every server task.

    Args:
        host: Interface for the TCP listener.
        port: TCP port; 0 picks a free one (see :attr:`LocalServer.url`).
        seed: Seed of the synthetic ledger.
        api_keys: Accepted ``X-API-Key`` values.
        transactions_per_slot: Mean transactions per slot.
        bundle_size: Slots per bundle (parallel splits follow bundles).
        startup_delay: Seconds each create spends in its start-up phases.
        snake_case: Emit inline keys snake_case.
        backpressure: ``"block"`` (a full subscriber queue holds execution) or ``"drop"``.
        queue_size: Notifications one data socket may have waiting.
        max_message_size: Largest client message; bigger ones close the socket with 1009.
        tcp: Listen on TCP; with ``False`` only :meth:`LocalServer.connector` reaches it.
        chaos: Random faults.
        program_count: Program ids in the ledger.
        account_count: Program-owned accounts in the ledger.
        replay_window: Executed slots kept for ``replayFromSlot``.
        completed_linger: Seconds a data socket opened after ``completed`` stays open after
            its last request.
        max_sessions_per_key: Live sessions one key may hold.
        record: Keep the per-session delivery record behind :meth:`LocalServer.delivered`
            and :meth:`LocalServer.rpc_calls`.
        legacy_sessions_created: Send ``sessionsCreatedV2`` without the slot lists, as older
            servers do.
    """
    config = ServerConfig(
        host=host,
        port=port,
        api_keys=tuple(api_keys),
        ledger=LedgerConfig(
            seed=seed,
            transactions_per_slot=transactions_per_slot,
            program_count=program_count,
            account_count=account_count,
            bundle_size=bundle_size,
        ),
        startup_delay=startup_delay,
        snake_case=snake_case,
        backpressure=backpressure,
        queue_size=queue_size,
        max_message_size=max_message_size,
        tcp=tcp,
        chaos=chaos,
        replay_window=replay_window,
        completed_linger=completed_linger,
        max_sessions_per_key=max_sessions_per_key,
        record=record,
        legacy_sessions_created=legacy_sessions_created,
    )
    async with open_server(config) as server:
        yield server


@asynccontextmanager
async def open_server(config: ServerConfig) -> AsyncIterator[LocalServer]:
    """Run a local backtest server configured by ``config`` for the duration of the block.

    :func:`open_local_server` is the same with keyword arguments.

    Raises:
        OSError: the TCP listener could not be opened.
    """
    try:
        async with trio.open_nursery() as nursery:
            core = ServerCore(config, nursery)
            url = f"ws://{_url_host(config.host)}:{config.port}{_CONTROL_PATH}"
            if config.tcp:
                listeners = await trio.open_tcp_listeners(config.port, host=config.host or None)
                # Port 0 gives each address family its own port; keep one so the URL is exact.
                for extra in listeners[1:]:
                    await extra.aclose()
                listener = listeners[0]
                address, port = listener.socket.getsockname()[:2]
                url = f"ws://{_url_host(str(address))}:{port}{_CONTROL_PATH}"
                nursery.start_soon(
                    functools.partial(
                        trio.serve_listeners,
                        functools.partial(_tcp_handler, core),
                        [listener],
                        handler_nursery=nursery,
                    )
                )
            nursery.start_soon(core.faults.run_chaos)
            server = LocalServer(core, url)
            logger.info("local backtest server at %s", url)
            try:
                yield server
            finally:
                await server._shutdown()
                nursery.cancel_scope.cancel()
                core.engine.reset()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            _reraise(group.exceptions[0])
        raise


def _reraise(exc: BaseException) -> NoReturn:
    cause, context = exc.__cause__, exc.__context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__ = cause, context
        del exc


async def _tcp_handler(core: ServerCore, stream: trio.SocketStream) -> None:
    await handle_connection(core, stream, None)


async def serve_backtest(
    config: ServerConfig | None = None,
    *,
    task_status: trio.TaskStatus[LocalServer] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run a local server until cancelled; ``nursery.start`` it to get the :class:`LocalServer`."""
    async with open_server(config if config is not None else ServerConfig()) as server:
        task_status.started(server)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
