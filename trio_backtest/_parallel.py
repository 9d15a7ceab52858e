"""Parallel batches: one multiplexed control connection, many sub-sessions (client.md §6).

The batch's control manager demultiplexes ``sessionEventV2`` into one channel per
sub-session; each `ParallelSubSession` is a full session surface of its own, with its
subscription managers in a nursery nested under the batch's, so a sub-session can be
closed, or fail, without touching its siblings.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from ._config import ClientConfig
from ._connectors import default_connector
from ._control import (
    ContinueRequest,
    ControlManager,
    EventGate,
    raise_attach_error,
    raise_create_error,
)
from ._coordinator import CoordinatorStatistics, ReconnectCoordinator
from ._errors import ControlClosedError, SessionCreateError
from ._events import ManagedEvent, SessionInfo
from ._plumbing import Completion, Counters, unwrap_single
from ._policy import DisconnectCause
from ._session import ManagedBacktestSession, SessionStatistics
from ._status import StatusCell, Up
from ._transport import (
    ApiKey,
    Connector,
    Dead,
    Link,
    check_transport_security,
)
from .protocol import (
    AttachParallelControlSessionV2,
    CloseSessionV1,
    Continue,
    ContinueSessionV1,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSessionParams,
    ParallelSessionAttachedV2,
    Sequenced,
    ServerError,
    SessionCreated,
    SessionEventV2,
    SessionsCreatedV2,
    Success,
    UnknownMessage,
    encode_control,
)

__all__ = [
    "ManagedParallelSession",
    "ParallelStatistics",
    "ParallelSubSession",
    "open_parallel_session",
]

logger = logging.getLogger("trio_backtest.parallel")


@final
class _SubControl:
    """The control surface one sub-session sees: its identity, its share of the batch's
    connection, its own sequence and readiness bookkeeping."""

    def __init__(
        self, batch: _BatchControl, session_id: str, rpc_endpoint: str, config: ClientConfig
    ) -> None:
        self._batch = batch
        self.info: SessionInfo | None = SessionInfo(session_id, rpc_endpoint)
        self.create_params = batch.create_params
        self.range: tuple[int, int] | None = None
        """The server's ``(start, end)`` for this sub-session; ``None`` from a server that
        sends no slot lists (``create_params`` then keeps the batch's bounds)."""
        self.own = Counters()
        self.sink, self.source = trio.open_memory_channel[Any](config.event_buffer)
        self.completed = Completion()
        self.gate = EventGate(
            self.sink,
            batch.status,
            self.own,
            self.completed,
            f"sub-session {session_id[:6]}",
            batch.progressed,
        )
        """This sub-session's events on their way to its user (seqId mark, readiness)."""
        self.closed = trio.Event()
        """Set when the server acknowledged ``closeSessionV1``."""
        self.session: ParallelSubSession | None = None

    @property
    def session_id(self) -> str:
        assert self.info is not None
        return self.info.session_id

    @property
    def status(self) -> StatusCell:
        """The batch's control connection status: one socket serves every sub-session."""
        return self._batch.status

    @property
    def counters(self) -> Counters:
        """This sub-session's counters, with the shared connection's reconnects."""
        return attrs.evolve(self.own, reconnects=self._batch.counters.reconnects)

    async def send(self, request: ContinueRequest) -> None:
        wrapped: ContinueSessionV1 | ContinueToSessionV1
        if isinstance(request, Continue):
            wrapped = ContinueSessionV1(self.session_id, request.params)
        else:
            wrapped = ContinueToSessionV1(self.session_id, request.slot, request.batch_index)
        await self._batch.enqueue(encode_control(wrapped), self.gate.readiness.on_continue_sent)


@final
class _BatchControl(ControlManager):
    """The multiplexed control manager of a parallel batch."""

    _what = "parallel batch"

    def __init__(self, *, create: CreateSessionParams, **kwargs: Any) -> None:
        super().__init__(resumable=create.resumable, **kwargs)
        self.create_params = create
        self.subs: dict[str, _SubControl] = {}
        self.control_session_id: str | None = None

    def __repr__(self) -> str:
        return f"<parallel batch control status={self.status.value!r} subs={len(self.subs)}>"

    async def enqueue(self, text: str, on_sent: Any) -> None:
        await self._enqueue((text, on_sent))

    def progressed(self) -> None:
        """A sub-session's user got something new over the shared connection."""
        self._progressed()

    def open_subs(self) -> list[_SubControl]:
        return [sub for sub in self.subs.values() if not sub.closed.is_set()]

    async def _create(self, link: Link) -> None:
        self.subs = {}  # ids from an attempt cut short by a drop belong to an abandoned batch
        await link.send(encode_control(CreateBacktestSession(self.create_params, parallel=True)))
        with trio.move_on_after(self._config.handshake_response_timeout):
            while True:
                message = await self._receive(link, handshake=True)
                match message:
                    case SessionCreated(session_id=sid):
                        endpoint = self._data_plane(message)
                        self.subs[sid] = _SubControl(self, sid, endpoint, self._config)
                    case SessionsCreatedV2():
                        self._split(message)
                        return
                    case ServerError():
                        raise_create_error(message)
        raise Dead(DisconnectCause.timeout("sessionsCreatedV2"))

    def _split(self, message: SessionsCreatedV2) -> None:
        """Adopt the server's split: it is authoritative.

        Older servers send no slot lists: each sub-session's range is then unknown
        (``range`` is ``None``) and its bookkeeping keeps the batch's bounds, which contain it.
        """
        ids, starts, ends = message.session_ids, message.start_slots, message.end_slots
        if set(ids) != set(self.subs) or len(ids) != len(self.subs):
            raise SessionCreateError(
                "sessionsCreatedV2 does not match the sessionCreated messages before it"
            )
        if (starts is None) != (ends is None) or (
            starts is not None and ends is not None and not len(ids) == len(starts) == len(ends)
        ):
            raise SessionCreateError("sessionsCreatedV2 has slot lists that do not match its ids")
        self.control_session_id = message.control_session_id
        ordered = {}
        for index, sid in enumerate(ids):
            sub = self.subs[sid]
            if starts is not None and ends is not None:
                start, end = starts[index], ends[index]
                sub.range = (start, end)
                sub.create_params = attrs.evolve(self.create_params, start_slot=start, end_slot=end)
            ordered[sid] = sub
        self.subs = ordered
        logger.info("parallel batch created with %d sub-sessions", len(ordered))

    async def _attach(self, link: Link) -> None:
        assert self.control_session_id is not None
        cursors = {
            sid: sub.gate.seq.high_water
            for sid, sub in self.subs.items()
            if sub.gate.seq.high_water is not None
        }
        attach = AttachParallelControlSessionV2(self.control_session_id, cursors)
        await link.send(encode_control(attach))
        while True:
            message = await self._receive(link, handshake=True)
            if isinstance(message, ParallelSessionAttachedV2):
                return
            if isinstance(message, ServerError):
                raise_attach_error(message)

    def _on_attached(self, link: Link) -> None:
        for sub in self.subs.values():
            sub.gate.readiness.on_attached(link.number)

    async def _on_resumed(self, link: Link) -> None:
        for sub in self.open_subs():
            await sub.gate.resumed(link.number)

    async def _broadcast(self, item: object) -> None:
        for sub in self.open_subs():
            await sub.gate.deliver(item)

    def _close_events(self) -> None:
        for sub in self.subs.values():
            sub.sink.close()

    def _finished(self) -> bool:
        return bool(self.subs) and not self.open_subs()

    async def _on_message(self, decoded: Sequenced[Any], link: Link, handshake: bool) -> object:
        message = decoded.message
        if not isinstance(message, SessionEventV2):
            # Batch-level traffic concerns no sub-session: logged and counted, not delivered.
            if isinstance(message, UnknownMessage):
                self.counters.unknown_messages += 1
                logger.info("parallel batch: ignored unknown method %r", message.method)
                return None
            if isinstance(message, ServerError) and not handshake:
                self.counters.unknown_messages += 1
                logger.warning("parallel batch: server error for the batch: %s", message.message)
                return None
            return message
        sub = self.subs.get(message.session_id)
        if sub is None:
            self.counters.unknown_messages += 1
            logger.info("parallel batch: event for an unknown sub-session")
            return None
        if not sub.gate.admit(message.seq_id):
            return None
        event = message.event
        if isinstance(event, Success):
            sub.gate.seen(message.seq_id)
            sub.closed.set()
            return None
        await sub.gate.pass_on(message.seq_id, event, link.number)
        return None


class ParallelSubSession(ManagedBacktestSession):
    """One sub-session of a parallel batch: the whole session surface, its range, and
    `aclose` to end it alone."""

    def __init__(
        self,
        nursery: trio.Nursery,
        scope: trio.CancelScope,
        control: _SubControl,
        batch: _BatchControl,
        *,
        config: ClientConfig,
        connector: Connector,
        coordinator: ReconnectCoordinator,
    ) -> None:
        super().__init__(
            nursery,
            control,
            config=config,
            connector=connector,
            coordinator=coordinator,
            sink=control.sink,
            source=control.source,
            completed=control.completed,
        )
        self._sub = control
        self._batch = batch
        self._scope = scope
        self._closed_by_user = False

    def __repr__(self) -> str:
        span = "slots unknown" if self.range is None else "slots {}..{}".format(*self.range)
        return f"<ParallelSubSession {self.info.session_id[:6]}… {span}>"

    @property
    def range(self) -> tuple[int, int] | None:
        """The server-authoritative ``(start_slot, end_slot)`` of this sub-session.

        ``None`` when the server did not say (``sessionsCreatedV2`` without slot lists,
        as older servers send it).
        """
        return self._sub.range

    async def next_event(self) -> ManagedEvent:
        """The next event of this sub-session (see `ManagedBacktestSession.next_event`).

        Raises:
            ControlClosedError: this sub-session was closed with `aclose`.
        """
        if self._closed_by_user:
            raise ControlClosedError("this sub-session was closed")
        return await super().next_event()

    async def _send(self, request: ContinueRequest) -> None:
        if self._closed_by_user:
            raise ControlClosedError("this sub-session was closed")
        await super()._send(request)

    async def aclose(self) -> None:
        """End this sub-session only: its subscriptions, then its server-side session.

        Bounded by ``graceful_close_timeout``; its siblings are not touched.
        """
        if self._closed_by_user:
            return
        self._closed_by_user = True
        self._scope.cancel()
        with trio.move_on_after(self._config.graceful_close_timeout):
            await self._subscriptions_closed()
            if isinstance(self._batch.status.value, Up) and not self._sub.closed.is_set():
                close = encode_control(CloseSessionV1(self._sub.session_id))
                await self._batch.enqueue(close, lambda _number: None)
                await self._sub.closed.wait()


@final
@attrs.frozen
class ParallelStatistics:
    """A snapshot of a batch: its control connection and every sub-session."""

    control_session_id: str | None
    """The batch's id on the server (``None`` before it was created)."""
    control_reconnects: int
    """Reconnects of the shared control connection."""
    control_status: str
    """The class name of the control connection's current status, e.g. ``Up``."""
    control_unknown_messages: int
    """Messages of the shared control connection that concern no sub-session: events for
    an unknown sub-session, batch-level errors, unknown methods (logged, not delivered)."""
    control_protocol_errors: int
    """Frames of the shared control connection that broke the protocol (logged, dropped)."""
    sub_sessions: Mapping[str, SessionStatistics]
    """Each sub-session's statistics, by session id."""
    coordinator: CoordinatorStatistics
    """The batch's reconnect coordinator."""


@final
class ManagedParallelSession:
    """A parallel batch: one control connection shared by `sub_sessions`."""

    def __init__(
        self,
        batch: _BatchControl,
        sub_sessions: tuple[ParallelSubSession, ...],
        coordinator: ReconnectCoordinator,
    ) -> None:
        self._batch = batch
        self._coordinator = coordinator
        self.sub_sessions = sub_sessions
        """The sub-sessions in the server's order (by range)."""

    def __repr__(self) -> str:
        return f"<ManagedParallelSession sub_sessions={len(self.sub_sessions)}>"

    @property
    def control_session_id(self) -> str:
        """The batch's id on the server."""
        assert self._batch.control_session_id is not None
        return self._batch.control_session_id

    @property
    def status(self) -> StatusCell:
        """The shared control connection's status."""
        return self._batch.status

    @property
    def coordinator(self) -> ReconnectCoordinator:
        """The coordinator every sub-session's subscriptions share."""
        return self._coordinator

    def statistics(self) -> ParallelStatistics:
        """A snapshot of the batch and each sub-session (no secrets)."""
        return ParallelStatistics(
            control_session_id=self._batch.control_session_id,
            control_reconnects=self._batch.counters.reconnects,
            control_status=type(self._batch.status.value).__name__,
            control_unknown_messages=self._batch.counters.unknown_messages,
            control_protocol_errors=self._batch.counters.protocol_errors,
            sub_sessions={s.info.session_id: s.statistics() for s in self.sub_sessions},
            coordinator=self._coordinator.statistics(),
        )


async def _host_sub(*, task_status: trio.TaskStatus[tuple[trio.Nursery, trio.CancelScope]]) -> None:
    """Hold a nursery for one sub-session's subscription managers until it is cancelled."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


@asynccontextmanager
async def open_parallel_session(
    url: str,
    api_key: str,
    create: CreateSessionParams,
    *,
    config: ClientConfig | None = None,
    coordinator: ReconnectCoordinator | None = None,
    connector: Connector | None = None,
) -> AsyncIterator[ManagedParallelSession]:
    """Create a parallel batch and manage it for the duration of the block.

    The server splits ``[start_slot, end_slot]`` into sub-sessions (its split is
    authoritative: see each sub-session's ``range``). Drive them concurrently, e.g.
    one task each in a nursery. The local server requires ``disconnect_timeout_secs``.

    Args:
        url: The control endpoint.
        api_key: Sent only in the control socket's upgrade request.
        create: The whole range and its options.
        config: Timeouts, budgets and TLS settings.
        coordinator: Shared by every sub-session's subscriptions (a new one if omitted);
            pass one to share it with other sessions on the same link.
        connector: How to open WebSockets.

    Raises:
        SessionCreateError: the server refused or never answered the create.
    """
    config = config or ClientConfig()
    check_transport_security(url, config)
    connector = connector or default_connector(config)
    coordinator = coordinator or ReconnectCoordinator()
    subs: list[ParallelSubSession] = []

    async def resume_gate() -> None:
        for sub in subs:
            await sub._subscriptions_up()

    async def subscriptions_closed() -> None:
        for sub in subs:
            await sub._subscriptions_closed()

    batch = _BatchControl(
        url=url,
        api_key=ApiKey(api_key),
        create=create,
        config=config,
        connector=connector,
        resume_gate=resume_gate,
        subscriptions_closed=subscriptions_closed,
    )
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(batch.run)
                for control in batch.subs.values():
                    sub_nursery, scope = await nursery.start(_host_sub)
                    sub = ParallelSubSession(
                        sub_nursery,
                        scope,
                        control,
                        batch,
                        config=config,
                        connector=connector,
                        coordinator=coordinator,
                    )
                    control.session = sub
                    subs.append(sub)
                yield ManagedParallelSession(batch, tuple(subs), coordinator)
            finally:
                nursery.cancel_scope.cancel()
