"""The control manager: owns the control WebSocket's whole life (client.md §4)."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, final

import trio

from ._config import ClientConfig
from ._dedupe import ReadinessTracker, SequenceFilter
from ._errors import (
    ContinueSendError,
    ControlClosedError,
    ControlFailedError,
    ManagedSessionError,
    SessionCreateError,
)
from ._events import ControlEvent, SessionInfo
from ._plumbing import Counters, Ended, unwrap_single
from ._policy import DisconnectCause, FailureWindow, GiveUp, ReconnectPolicy
from ._status import Closed, Failed, Reconnecting, StatusCell, Up
from ._transport import (
    ApiKey,
    Connector,
    Dead,
    Link,
    cause_of,
    check_transport_security,
    discard,
    open_io_nursery,
    resolve_rpc_endpoint,
    websocket_connector,
)
from .protocol import (
    AttachBacktestSession,
    CloseBacktestSession,
    Completed,
    Continue,
    ContinueTo,
    CreateBacktestSession,
    CreateSessionParams,
    DiscoveryBatch,
    Paused,
    ProtocolError,
    ReadyForContinue,
    ResumeAttachedSession,
    ServerError,
    SessionAttached,
    SessionCreated,
    SessionNotFound,
    SessionOwnerMismatch,
    Slot,
    Status,
    Success,
    UnknownMessage,
    decode_control,
    encode_control,
)

__all__ = ["ControlHandle", "spawn_control_manager"]

logger = logging.getLogger("trio_backtest.control")

ContinueRequest = Continue | ContinueTo


async def _no_gate() -> None:
    await trio.lowlevel.checkpoint()


@final
class ControlHandle:
    """A live control manager: its events, its status, and the way to send continues.

    Returned by `spawn_control_manager` once the session exists. Events arrive on
    `events` (`ControlEvent` values) when the handle was spawned on its own; a
    `ManagedBacktestSession` reads them for you.
    """

    def __init__(
        self,
        *,
        url: str,
        api_key: ApiKey,
        create: CreateSessionParams,
        config: ClientConfig,
        connector: Connector,
        sink: trio.MemorySendChannel[Any],
        completed: trio.Event,
        resume_gate: Callable[[], Awaitable[None]] = _no_gate,
        subscriptions_closed: Callable[[], Awaitable[None]] = _no_gate,
        events: trio.MemoryReceiveChannel[Any] | None = None,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._create = create
        self._config = config
        self._connector = connector
        self._sink = sink
        self._completed = completed
        self._resume_gate = resume_gate
        self._subscriptions_closed = subscriptions_closed
        self._continue_send, self._continue_recv = trio.open_memory_channel[ContinueRequest](1)
        self._rng = config.rng if config.rng is not None else random.Random()
        self._seq = SequenceFilter()
        self._readiness = ReadinessTracker()
        self._link: Link | None = None
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self.events = events
        """Control events, when spawned without a session (else ``None``)."""
        self.status = StatusCell()
        """The control connection's `ConnectionStatus`."""
        self.counters = Counters()
        """Running counters for ``statistics()``."""
        self.info: SessionInfo | None = None
        """The session's identity, set once it was created."""

    def __repr__(self) -> str:
        return f"<ControlHandle {self._url!r} status={self.status.value!r}>"

    @property
    def resumable(self) -> bool:
        """Whether the server keeps the session across control drops."""
        return self._create.resumable

    @property
    def create_params(self) -> CreateSessionParams:
        """What the session was created with."""
        return self._create

    async def send(self, request: ContinueRequest) -> None:
        """Hand a continue to the control connection (capacity 1: waits for room).

        Raises:
            ContinueSendError: the manager has ended.
        """
        try:
            await self._continue_send.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ContinueSendError("the control connection has ended") from None

    async def aclose(self) -> None:
        """Close the session (gracefully, bounded) and wait for the manager to end."""
        self._scope.cancel()
        await self._done.wait()

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[ControlHandle]) -> None:
        """The manager task: connect, handshake, read, reconnect; close on cancellation."""
        try:
            with self._scope:
                async with open_io_nursery() as io:
                    try:
                        await self._loop(io, task_status)
                    finally:
                        await self._graceful_close()
        finally:
            self._continue_recv.close()
            self.status.finish(Closed())
            self._done.set()

    async def _loop(self, io: trio.Nursery, task_status: trio.TaskStatus[ControlHandle]) -> None:
        window = FailureWindow(ReconnectPolicy(self._config), self._rng)
        number = 0
        while True:
            number += 1
            try:
                await self._connection(io, number, window, task_status)
                return
            except Dead as exc:
                cause = exc.cause
            error = self._unrecoverable(cause)
            now = trio.current_time()
            decision = window.dropped(now, cause) if error is None else None
            if decision is None or isinstance(decision, GiveUp):
                reason = str(cause) if decision is None else decision.reason
                if error is None:
                    error = (
                        SessionCreateError(reason)
                        if self.info is None
                        else ControlFailedError(reason)
                    )
                await self._fail(error, task_started=self.info is not None)
                return
            self.counters.reconnects += 1
            self.status.set(Reconnecting(decision.attempt, cause))
            logger.warning(
                "control connection lost (%s); reconnect attempt %d in %.2f s",
                cause,
                decision.attempt,
                decision.delay,
            )
            await trio.sleep(decision.delay)

    def _unrecoverable(self, cause: DisconnectCause) -> ManagedSessionError | None:
        """The error for a drop that no reconnect can mend, else ``None``."""
        if self.info is not None and not self.resumable:
            if cause.code in (1000, 1001):
                return ControlClosedError(f"the server closed the session ({cause})")
            return ControlFailedError(
                f"control connection lost and the session is not resumable ({cause})"
            )
        return None

    async def _fail(self, error: ManagedSessionError, *, task_started: bool) -> None:
        logger.error("control manager failed: %s", error)
        self.status.set(Failed(str(error)))
        if not task_started:
            raise error
        await self._deliver(Ended("control", error))

    async def _connection(
        self,
        io: trio.Nursery,
        number: int,
        window: FailureWindow,
        task_status: trio.TaskStatus[ControlHandle],
    ) -> None:
        """One control connection, from connect to drop (raises `Dead`)."""
        cfg = self._config
        try:
            with trio.fail_after(cfg.connect_timeout):
                ws = await self._connector(
                    io,
                    self._url,
                    headers=[("X-API-Key", self._api_key.reveal())],
                    max_message_size=cfg.max_message_size,
                    ssl_context=cfg.ssl_context,
                    message_queue_size=16,
                )
        except BaseException as exc:
            cause = cause_of(exc)
            if cause is None:
                raise
            raise Dead(cause) from None
        link = Link(ws, cfg, number)
        self._link = link
        try:
            with unwrap_single():
                await self._converse(link, window, task_status)
        except Dead:
            self._link = None
            await discard(ws)
            raise
        finally:
            self.counters.messages += link.messages
            self.counters.bytes += link.bytes
            link.messages = link.bytes = 0

    async def _converse(
        self, link: Link, window: FailureWindow, task_status: trio.TaskStatus[ControlHandle]
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.keepalive)
            if self.info is None:
                await self._create_session(link)
                self.status.set(Up())
                window.connected(trio.current_time())
                task_status.started(self)
            else:
                await self._attach_session(link, nursery)
                self.status.set(Up())
                window.connected(trio.current_time())
            nursery.start_soon(self._send_continues, link)
            await self._read_forever(link)

    async def _create_session(self, link: Link) -> None:
        await link.send(encode_control(CreateBacktestSession(self._create)))
        with trio.move_on_after(self._config.handshake_response_timeout):
            while True:
                message = await self._receive(link, handshake=True)
                if isinstance(message, SessionCreated):
                    self.info = SessionInfo(
                        message.session_id, resolve_rpc_endpoint(self._url, message.rpc_endpoint)
                    )
                    logger.info("session created: %s", message.session_id)
                    return
                if isinstance(message, ServerError):
                    raise SessionCreateError(
                        f"the server refused to create the session: {message.message}"
                    )
                if message is not None:
                    logger.debug("ignored before sessionCreated: %r", message)
        raise Dead(DisconnectCause.timeout("sessionCreated"))

    async def _attach_session(self, link: Link, nursery: trio.Nursery) -> None:
        assert self.info is not None
        attach = AttachBacktestSession(self.info.session_id, self._seq.high_water)
        await link.send(encode_control(attach))
        timeout = self._config.handshake_response_timeout
        message: object | None = None
        with trio.move_on_after(timeout):
            while True:
                message = await self._receive(link, handshake=True)
                if isinstance(message, SessionAttached):
                    break
                if isinstance(message, ServerError):
                    error = message.error
                    if isinstance(error, SessionNotFound | SessionOwnerMismatch):
                        raise Dead(DisconnectCause.server_error(error.name, error.message))
                    raise Dead(DisconnectCause.protocol(f"attach answered by {error.message}"))
        if not isinstance(message, SessionAttached):
            raise Dead(DisconnectCause.timeout("sessionAttached"))
        self._readiness.on_attached(link.number)
        # The replay follows at once; deliver it while the subscriptions come back.
        resumed = trio.Event()

        async def resume() -> None:
            await self._resume_gate()
            await link.send(encode_control(ResumeAttachedSession()))
            resumed.set()

        nursery.start_soon(resume)
        while not resumed.is_set():
            message = await self._receive(link, handshake=True)
        with trio.move_on_after(timeout):
            while not isinstance(message, Success):
                message = await self._receive(link, handshake=True)
            logger.info("session %s resumed", self.info.session_id)
            if self._readiness.on_resumed(link.number):
                await self._deliver(ReadyForContinue())
            return
        raise Dead(DisconnectCause.timeout("resume success"))

    async def _read_forever(self, link: Link) -> None:
        while True:
            await self._receive(link, handshake=False)

    async def _receive(self, link: Link, *, handshake: bool) -> object | None:
        """Read one frame; deliver what the user should see, return the rest.

        Sequenced duplicates and repeated readiness are dropped here. During a
        handshake, a frame that breaks the protocol ends the connection.
        """
        raw = await link.receive()
        try:
            decoded = decode_control(raw)
        except ProtocolError as exc:
            self.counters.protocol_errors += 1
            logger.warning("control: dropped a malformed frame: %s", exc)
            if handshake:
                raise Dead(DisconnectCause.protocol(str(exc))) from None
            return None
        if not self._seq.accept(decoded.seq_id):
            self.counters.duplicates += 1
            return None
        if self._seq.jumps:
            logger.debug("control: seqId jumped to %s", decoded.seq_id)
        message = decoded.message
        event: ControlEvent | None = None
        match message:
            case Slot():
                self._readiness.on_slot_or_completed()
                event = message
            case Completed():
                self._readiness.on_slot_or_completed()
                self._completed.set()
                event = message
            case ReadyForContinue():
                if self._readiness.on_ready(link.number):
                    event = message
                else:
                    self.counters.duplicates += 1
                    return None
            case Paused():
                self._readiness.on_paused()
                event = message
            case Status() | DiscoveryBatch():
                event = message
            case ServerError():
                if handshake:
                    return message
                event = message
            case UnknownMessage():
                self.counters.unknown_messages += 1
                logger.info("control: ignored unknown method %r", message.method)
                return None
            case _:
                return message
        await self._deliver(event)
        return None

    async def _deliver(self, item: object) -> None:
        try:
            await self._sink.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            logger.debug("control: nobody reads events any more; dropped %r", item)

    async def _send_continues(self, link: Link) -> None:
        async for request in self._continue_recv:
            # Counted as sent before the write: if the write fails, the continue was
            # lost in the drop and the resume's fresh ready must be delivered.
            self._readiness.on_continue_sent(link.number)
            await link.send(encode_control(request))

    async def _graceful_close(self) -> None:
        """Close the session and the socket within one ``graceful_close_timeout``.

        The subscriptions are closed first; then ``closeBacktestSession``, its
        ``success`` and the close frame; the socket is dropped whatever happened.
        """
        link = self._link
        deadline = trio.current_time() + self._config.graceful_close_timeout
        with trio.CancelScope(shield=True, deadline=deadline):
            try:
                await self._subscriptions_closed()
                if link is None:
                    return
                if self.info is not None and not isinstance(self.status.value, Failed):
                    await link.send(encode_control(CloseBacktestSession()))
                    while not isinstance(await self._decode_quietly(link), Success):
                        pass
                    logger.info("session %s closed", self.info.session_id)
                await link.ws.aclose()
            except Dead:
                pass
            finally:
                if link is not None:
                    await discard(link.ws)

    @staticmethod
    async def _decode_quietly(link: Link) -> object:
        try:
            return decode_control(await link.receive()).message
        except ProtocolError:
            return None


async def spawn_control_manager(
    nursery: trio.Nursery,
    url: str,
    api_key: str,
    create: CreateSessionParams,
    *,
    config: ClientConfig | None = None,
    connector: Connector | None = None,
) -> ControlHandle:
    """Start a control manager in ``nursery``; return once the session exists.

    Events arrive on the handle's ``events`` channel.

    Raises:
        SessionCreateError: the server refused the create or never answered it.
        ValueError: a bad URL, or an API key that would travel unencrypted.
    """
    config = config or ClientConfig()
    check_transport_security(url, config)
    send, receive = trio.open_memory_channel[Any](config.event_buffer)
    handle = ControlHandle(
        url=url,
        api_key=ApiKey(api_key),
        create=create,
        config=config,
        connector=connector or websocket_connector,
        sink=send,
        completed=trio.Event(),
        events=receive,
    )
    with unwrap_single():
        result: ControlHandle = await nursery.start(handle.run)
    return result
