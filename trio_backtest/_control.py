"""The control manager: owns the control WebSocket's whole life (client.md §4)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, final

import trio

from ._config import ClientConfig
from ._connectors import default_connector
from ._dedupe import MAX_SEQUENCE_JUMP, ReadinessTracker, SequenceFilter, Sequencing
from ._errors import (
    ContinueSendError,
    ControlClosedError,
    ControlFailedError,
    ManagedSessionError,
    SessionCreateError,
)
from ._events import ControlEvent, SessionInfo
from ._plumbing import Completion, Counters, Ended, hand_over, unwrap_single
from ._policy import DisconnectCause, FailureWindow, GiveUp, ReconnectPolicy
from ._status import Closed, Failed, Reconnecting, StatusCell, Up
from ._transport import (
    ApiKey,
    Connector,
    Dead,
    Link,
    check_transport_security,
    connect,
    discard,
    display_url,
    one_death,
    open_io_nursery,
    resolve_rpc_endpoint,
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
    InvalidRequest,
    Paused,
    ProtocolError,
    ReadyForContinue,
    ResumeAttachedSession,
    Sequenced,
    ServerError,
    SessionAttached,
    SessionCreated,
    SessionNotFound,
    SessionOwnerMismatch,
    Slot,
    Status,
    Success,
    UnknownBacktestError,
    UnknownMessage,
    decode_control,
    encode_control,
)

__all__ = ["ControlHandle", "ControlManager", "EventGate", "spawn_control_manager"]

logger = logging.getLogger("trio_backtest.control")

ContinueRequest = Continue | ContinueTo


async def _no_gate() -> None:
    await trio.lowlevel.checkpoint()


Sendable = tuple[str, Callable[[int], None]]
"""An encoded request for the control socket, and what to call once it went out on
control connection number N."""


class ControlManager:
    """What every control manager shares: the connection loop, keepalive, reconnects,
    the continue queue and the bounded graceful close.

    Subclasses say how a session is created, re-attached, read and closed.
    """

    _what = "session"

    def __init__(
        self,
        *,
        url: str,
        api_key: ApiKey,
        config: ClientConfig,
        connector: Connector,
        resumable: bool,
        resume_gate: Callable[[], Awaitable[None]] = _no_gate,
        subscriptions_closed: Callable[[], Awaitable[None]] = _no_gate,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._config = config
        self._connector = connector
        self._resumable = resumable
        self._resume_gate = resume_gate
        self._subscriptions_closed = subscriptions_closed
        self._outbox_send, self._outbox = trio.open_memory_channel[Sendable](1)
        self._rng = config.random_source()
        self._window = FailureWindow(ReconnectPolicy(config), self._rng)
        self._link: Link | None = None
        self._created = False
        self._failure: ManagedSessionError | None = None
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self.status = StatusCell()
        """The control connection's `ConnectionStatus`."""
        self.counters = Counters()
        """Running counters for ``statistics()``."""

    @property
    def resumable(self) -> bool:
        """Whether the server keeps the session across control drops."""
        return self._resumable

    async def _enqueue(self, item: Sendable) -> None:
        try:
            await self._outbox_send.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            failure = self._failure
            if failure is not None:
                # A continue that was waiting for room when the manager gave up learns why.
                raise type(failure)(str(failure)) from None
            raise ContinueSendError("the control connection has ended") from None

    async def aclose(self) -> None:
        """Close the session (gracefully, bounded) and wait for the manager to end."""
        self._scope.cancel()
        await self._done.wait()

    # ------------------------------------------------------------------ hooks

    async def _create(self, link: Link) -> None:
        """Create the session on the first connection (raise `Dead` to retry)."""
        raise NotImplementedError

    async def _attach(self, link: Link) -> None:
        """Re-attach on a later connection, up to the answer; the replay follows."""
        raise NotImplementedError

    def _on_attached(self, link: Link) -> None:
        """The replay begins."""

    async def _on_resumed(self, link: Link) -> None:
        """The resume was acknowledged."""

    async def _on_message(self, decoded: Sequenced[Any], link: Link, handshake: bool) -> object:
        """Handle one decoded frame; return what a handshake waits for, else ``None``."""
        raise NotImplementedError

    async def _broadcast(self, item: object) -> None:
        """Hand ``item`` (a failure) to every reader of this manager's events."""
        raise NotImplementedError

    def _finished(self) -> bool:
        """Whether the session has ended on purpose, so a closed socket is expected."""
        return False

    def _data_plane(self, created: SessionCreated) -> str:
        """The absolute data-plane URL of a created session.

        Raises:
            SessionCreateError: the server's ``rpcEndpoint`` is unusable (not retried: the
                server would say the same again).
        """
        try:
            return resolve_rpc_endpoint(
                self._url, created.rpc_endpoint, allow_insecure=self._config.allow_insecure
            )
        except ValueError as exc:
            raise SessionCreateError(f"the server's rpcEndpoint is unusable: {exc}") from None

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[Any]) -> None:
        """The manager task: connect, handshake, read, reconnect; close on cancellation."""
        try:
            with self._scope:
                async with open_io_nursery() as io:
                    try:
                        await self._loop(io, task_status)
                    finally:
                        await self._graceful_close()
        finally:
            self._outbox.close()
            self._close_events()
            self.status.finish(Closed())
            self._done.set()

    def _close_events(self) -> None:
        """No more events will come: let readers of the events see the end."""

    def _progressed(self) -> None:
        """The connection handed the user something new (client.md §3: progress)."""
        self._window.progressed()

    async def _loop(self, io: trio.Nursery, task_status: trio.TaskStatus[Any]) -> None:
        window = self._window
        number = 0
        while True:
            number += 1
            try:
                await self._connection(io, number, window, task_status)
                return
            except Dead as exc:
                cause = exc.cause
            if self._finished():
                return
            error = self._unrecoverable(cause)
            decision = window.dropped(trio.current_time(), cause) if error is None else None
            if decision is None or isinstance(decision, GiveUp):
                reason = str(cause) if decision is None else decision.reason
                if error is None:
                    error = (
                        ControlFailedError(reason) if self._created else SessionCreateError(reason)
                    )
                await self._fail(error)
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
        if self._created and not self._resumable:
            if cause.code in (1000, 1001):
                return ControlClosedError(f"the server closed the {self._what} ({cause})")
            return ControlFailedError(
                f"control connection lost and the {self._what} is not resumable ({cause})"
            )
        return None

    async def _fail(self, error: ManagedSessionError) -> None:
        logger.error("control manager failed: %s", error)
        self._failure = error
        self.status.set(Failed(str(error)))
        if not self._created:
            raise error
        await self._broadcast(Ended("control", error))

    async def _connection(
        self,
        io: trio.Nursery,
        number: int,
        window: FailureWindow,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        """One control connection, from connect to drop (raises `Dead`)."""
        cfg = self._config
        headers = [("X-API-Key", self._api_key.reveal())]
        ws = await connect(self._connector, io, self._url, cfg, headers)
        link = Link(ws, cfg, number, self.counters)
        self._link = link
        try:
            with unwrap_single(), one_death():
                await self._converse(link, window, task_status)
        except Dead:
            self._link = None
            await discard(ws)
            raise

    async def _converse(
        self, link: Link, window: FailureWindow, task_status: trio.TaskStatus[Any]
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.keepalive, nursery)
            if not self._created:
                await self._create(link)
                self._created = True
                self.status.set(Up())
                window.connected(trio.current_time())
                task_status.started(self)
            else:
                await self._reattach(link, nursery)
                self.status.set(Up())
                window.connected(trio.current_time())
            nursery.start_soon(self._send_queued, link)
            while True:
                await self._receive(link, handshake=False)

    async def _reattach(self, link: Link, nursery: trio.Nursery) -> None:
        # The user is reading events meanwhile, at their own pace: each awaited reply is
        # timed only while waiting on the socket, never while the replay waits for the
        # user (the create, where nobody can read yet, keeps a plain deadline).
        timeout = self._config.handshake_response_timeout
        with link.awaiting_reply("the attach answer", timeout):
            await self._attach(link)
        self._on_attached(link)
        # The replay follows at once; deliver it while the subscriptions come back.
        resumed = trio.Event()

        async def resume() -> None:
            await self._resume_gate()
            await link.send(encode_control(ResumeAttachedSession()))
            resumed.set()

        nursery.start_soon(resume)
        message: object = None
        while not resumed.is_set():
            message = await self._receive(link, handshake=True)
        with link.awaiting_reply("resume success", timeout):
            while not isinstance(message, Success):
                message = await self._receive(link, handshake=True)
        logger.info("%s resumed", self._what)
        await self._on_resumed(link)

    async def _receive(self, link: Link, *, handshake: bool) -> object:
        """Read and handle one frame (see `_on_message`).

        During a handshake, a frame that breaks the protocol ends the connection;
        afterwards it is logged, counted and dropped.
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
        return await self._on_message(decoded, link, handshake)

    async def _send_queued(self, link: Link) -> None:
        async for text, on_sent in self._outbox:
            # Counted as sent before the write: if the write fails, the continue was
            # lost in the drop and the resume's fresh ready must be delivered.
            on_sent(link.number)
            await link.send(text)

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
                failed = isinstance(self.status.value, Failed)
                if self._created and not self._finished() and not failed:
                    await link.send(encode_control(CloseBacktestSession()))
                    while not isinstance(await self._decode_quietly(link), Success):
                        pass
                    logger.info("%s closed", self._what)
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


@final
class ControlHandle(ControlManager):
    """A live control manager of one session: its events, status, and continues.

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
        completed: Completion,
        resume_gate: Callable[[], Awaitable[None]] = _no_gate,
        subscriptions_closed: Callable[[], Awaitable[None]] = _no_gate,
        events: trio.MemoryReceiveChannel[Any] | None = None,
    ) -> None:
        super().__init__(
            url=url,
            api_key=api_key,
            config=config,
            connector=connector,
            resumable=create.resumable,
            resume_gate=resume_gate,
            subscriptions_closed=subscriptions_closed,
        )
        self._create_params = create
        self._sink = sink
        self._gate = EventGate(
            sink, self.status, self.counters, completed, "control", self._progressed
        )
        self.events = events
        """Control events, when spawned without a session (else ``None``)."""
        self.info: SessionInfo | None = None
        """The session's identity, set once it was created."""

    def __repr__(self) -> str:
        return f"<ControlHandle {display_url(self._url)!r} status={self.status.value!r}>"

    @property
    def create_params(self) -> CreateSessionParams:
        """What the session was created with."""
        return self._create_params

    async def send(self, request: ContinueRequest) -> None:
        """Hand a continue to the control connection (capacity 1: waits for room).

        Raises:
            ContinueSendError: the manager has ended.
        """
        await self._enqueue((encode_control(request), self._gate.readiness.on_continue_sent))

    async def _create(self, link: Link) -> None:
        await link.send(encode_control(CreateBacktestSession(self._create_params)))
        with trio.move_on_after(self._config.handshake_response_timeout):
            while True:
                message = await self._receive(link, handshake=True)
                if isinstance(message, SessionCreated):
                    self.info = SessionInfo(message.session_id, self._data_plane(message))
                    logger.info("session created: %s", message.session_id)
                    return
                if isinstance(message, ServerError):
                    raise_create_error(message)
                if message is not None:
                    logger.debug("ignored before sessionCreated: %r", message)
        raise Dead(DisconnectCause.timeout("sessionCreated"))

    async def _attach(self, link: Link) -> None:
        assert self.info is not None
        await link.send(
            encode_control(AttachBacktestSession(self.info.session_id, self._gate.seq.high_water))
        )
        while True:
            message = await self._receive(link, handshake=True)
            if isinstance(message, SessionAttached):
                return
            if isinstance(message, ServerError):
                raise_attach_error(message)

    def _on_attached(self, link: Link) -> None:
        self._gate.readiness.on_attached(link.number)

    async def _on_resumed(self, link: Link) -> None:
        await self._gate.resumed(link.number)

    async def _broadcast(self, item: object) -> None:
        await self._gate.deliver(item)

    def _close_events(self) -> None:
        self._sink.close()

    async def _on_message(self, decoded: Sequenced[Any], link: Link, handshake: bool) -> object:
        gate = self._gate
        if not gate.admit(decoded.seq_id):
            return None
        message = decoded.message
        if handshake and isinstance(message, ServerError):
            gate.seen(decoded.seq_id)
            return message
        return await gate.pass_on(decoded.seq_id, message, link.number)


@final
class EventGate:
    """One (sub-)session's control events on their way to its user, each exactly once.

    The one place where a control event is judged, handed over and recorded as seen
    (client.md §4, style.md "Seen is a commit"): `admit` and `pass_on` judge a message by
    its ``seqId`` and the readiness rules without recording anything the user has not
    got; `hand_over` puts an event in the user's channel and then, with nothing awaited
    in between, commits it — the high-water mark, the readiness, ``Completed``, the
    connection's progress. ``MemorySendChannel.send`` either delivers and returns or
    raises without delivering, so a cancelled hand-over leaves the event to be replayed.
    """

    def __init__(
        self,
        sink: trio.MemorySendChannel[Any],
        cell: StatusCell,
        counters: Counters,
        completed: Completion,
        what: str,
        progressed: Callable[[], None],
    ) -> None:
        self.seq = SequenceFilter()
        """The ``seqId`` high-water mark of what was handed over."""
        self.readiness = ReadinessTracker()
        """One readiness answer per continue."""
        self.sink = sink
        self.completed = completed
        """Set once ``Completed`` was handed over."""
        self._cell = cell
        self._counters = counters
        self._what = what
        self._progressed = progressed

    def __repr__(self) -> str:
        return f"<EventGate {self._what} {self.seq!r} {self.readiness!r}>"

    def admit(self, seq_id: int | None) -> bool:
        """Whether a message with ``seq_id`` is new; a duplicate is counted and dropped.

        Raises:
            Dead: ``seq_id`` jumps more than `MAX_SEQUENCE_JUMP` past the mark: not
                trusted (protocol.md §7), the connection is treated as broken.
        """
        verdict = self.seq.check(seq_id)
        if verdict is Sequencing.NEW:
            return True
        if verdict is Sequencing.DUPLICATE:
            self._counters.duplicates += 1
            return False
        self._counters.protocol_errors += 1
        detail = (
            f"seqId {seq_id} jumps more than {MAX_SEQUENCE_JUMP} past the high-water mark "
            f"{self.seq.high_water}"
        )
        logger.warning("%s: %s; the connection is treated as broken", self._what, detail)
        raise Dead(DisconnectCause.protocol(detail))

    def seen(self, seq_id: int | None) -> None:
        """Record a message that is not handed to the user (or already was) as seen."""
        jumps = self.seq.jumps
        self.seq.commit(seq_id)
        if self.seq.jumps != jumps and self.seq.last_jump is not None:
            expected, received = self.seq.last_jump
            logger.warning(
                "%s: seqId jumped from %d to %d; %d message(s) were not replayed",
                self._what,
                expected,
                received,
                received - expected,
            )

    async def pass_on(self, seq_id: int | None, message: object, connection: int) -> object:
        """Hand a new message over if it is a user event, else record it as seen.

        Returns:
            ``None`` for an event handed over (or dropped); otherwise the message itself
            (``sessionCreated``, ``success``, ...), for a handshake that waits for it.
        """
        event = route_event(message, self.readiness, connection, self._counters)
        if event is None:
            self.seen(seq_id)
            return None if isinstance(message, UnknownMessage) else message
        await self.hand_over(seq_id, event)
        return None

    async def resumed(self, connection: int) -> None:
        """The resume on ``connection`` succeeded: hand over a ready held back, if owed."""
        if self.readiness.on_resumed(connection):
            await self.hand_over(None, ReadyForContinue())

    async def hand_over(self, seq_id: int | None, event: ControlEvent) -> None:
        """Put ``event`` in the user's channel, then commit it as seen."""
        await self.deliver(event)
        # Seen means handed over: nothing may await between the send and these commits.
        self.seen(seq_id)
        match event:
            case Slot() | Completed():
                self.readiness.on_slot_or_completed()
            case ReadyForContinue() | Paused():
                self.readiness.handed_over()
        if isinstance(event, Completed):
            self.completed.set()
        self._progressed()

    async def deliver(self, item: object) -> None:
        """Put ``item`` in the user's channel (dropped if nobody reads any more)."""
        if not await hand_over(self.sink, item, self._cell):
            logger.debug("%s: nobody reads events any more; dropped %r", self._what, item)


def raise_create_error(message: ServerError) -> NoReturn:
    """Turn an error answer to a create into the `Dead` that says whether to retry.

    ``InvalidRequest`` is final (client.md §3); other errors are retried by the policy.
    """
    error = message.error
    if isinstance(error, InvalidRequest):
        raise Dead(DisconnectCause.create_rejected(error.message))
    variant = error.variant if isinstance(error, UnknownBacktestError) else error.name
    raise Dead(DisconnectCause.server_error(variant, error.message))


def raise_attach_error(message: ServerError) -> NoReturn:
    """Turn an error answer to an attach into the `Dead` that says whether to retry."""
    error = message.error
    if isinstance(error, SessionNotFound | SessionOwnerMismatch):
        raise Dead(DisconnectCause.server_error(error.name, error.message))
    raise Dead(DisconnectCause.protocol(f"attach answered by {error.message}"))


def route_event(
    message: object, readiness: ReadinessTracker, connection: int, counters: Counters
) -> ControlEvent | None:
    """The user-facing event for a server message, or ``None`` to hold it back.

    Asks the readiness tracker whether a ``readyForContinue`` is owed (a repeated one is
    dropped and counted) but records nothing: `EventGate.hand_over` does, once the event
    was handed over. Unknown methods are counted and logged; handshake-level messages
    (``sessionCreated``, ``success``, ...) are not events.
    """
    match message:
        case Slot() | Completed() | Status() | DiscoveryBatch() | ServerError():
            return message
        case ReadyForContinue():
            if readiness.on_ready(connection):
                return message
            counters.duplicates += 1
            return None
        case Paused():
            return message if readiness.on_paused() else None
        case UnknownMessage():
            counters.unknown_messages += 1
            logger.info("control: ignored unknown method %r", message.method)
            return None
        case _:
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
        connector=connector or default_connector(config),
        sink=send,
        completed=Completion(),
        events=receive,
    )
    with unwrap_single():
        result: ControlHandle = await nursery.start(handle.run)
    return result
