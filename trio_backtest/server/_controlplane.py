"""One control socket: requests in, the attached session's messages out (protocol.md §2-§3)."""

from __future__ import annotations

import logging
from collections import deque
from typing import final

import attrs
import trio
import trio_websocket

from ..protocol import (
    AttachBacktestSession,
    AttachParallelControlSessionV2,
    BacktestError,
    CloseBacktestSession,
    CloseSessionV1,
    Continue,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    InvalidRequest,
    ParallelSessionAttachedV2,
    ProtocolError,
    ReadyForContinue,
    ResumeAttachedSession,
    ServerError,
    SessionAttached,
    SessionCreated,
    SessionNotFound,
    SessionOwnerMismatch,
    SessionsCreatedV2,
    Success,
    UnknownMessage,
    decode_control,
    encode_control,
)
from ..protocol import ServerMessage as _ServerMessage
from ._controls import ConnHandle
from ._core import ServerCore
from ._session import Batch, ControlItem, Session
from ._stats import Delivery, Record

__all__ = ["ControlConnection"]

logger = logging.getLogger("trio_backtest.server.control")

#: Unsent control frames after which a session waits for the client to read.
_OUTBOX_LIMIT = 256

_CLIENT_REQUESTS = (
    CreateBacktestSession,
    Continue,
    ContinueTo,
    CloseBacktestSession,
    AttachBacktestSession,
    ResumeAttachedSession,
    ContinueSessionV1,
    ContinueToSessionV1,
    CloseSessionV1,
    AttachParallelControlSessionV2,
)


@final
@attrs.frozen
class _CloseItem:
    code: int
    reason: str


@final
class ControlConnection:
    """Serves one accepted control socket until it closes or breaks."""

    def __init__(
        self,
        core: ServerCore,
        handle: ConnHandle,
        ws: trio_websocket.WebSocketConnection,
        owner: int,
    ) -> None:
        self.core = core
        self.handle = handle
        self.ws = ws
        self.owner = owner
        self.number = handle.number
        self.session: Session | None = None
        self.batch: Batch | None = None
        self._outbox: deque[ControlItem | _CloseItem] = deque()
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._dead = False
        self._detached = False
        self._released = False
        self._closing = False
        self._garbage = 0

    # ------------------------------------------------------------ ControlOut

    async def wait_room(self) -> None:
        """Wait while too many frames are unsent (a client that does not read)."""
        while not self._dead and len(self._outbox) >= _OUTBOX_LIMIT:
            await self._room.park()

    async def wait_flushed(self) -> None:
        """Wait until every queued frame was written (or the socket is gone)."""
        while not self._dead and self._outbox and not isinstance(self._outbox[0], _CloseItem):
            await self._room.park()

    def push(self, item: ControlItem) -> None:
        """Queue a frame behind everything queued before."""
        if self._dead or self._closing:
            return
        self._outbox.append(item)
        self._wake_writer.unpark_all()

    def release(self, reason: str) -> None:
        """The session moved to another socket: close this one, detaching nothing."""
        self._released = True
        self.session = None
        self.batch = None
        self.handle.session_ids = frozenset()
        self.close_after_flush(1000, reason)

    def close_after_flush(self, code: int, reason: str = "") -> None:
        """Close with ``code`` once everything queued was written."""
        if self._closing:
            return
        self._outbox.append(_CloseItem(code, reason))
        self._closing = True
        self._wake_writer.unpark_all()

    # ------------------------------------------------------------ serving

    async def serve(self) -> None:
        """Read and answer requests; on the way out, detach what this socket held."""
        self.handle.on_drop = self._lost
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            self._lost()

    def _lost(self) -> None:
        """The socket is gone: detach what it held (once)."""
        self._dead = True
        self._room.unpark_all()
        if self._detached:
            return
        self._detached = True
        if not self._released:
            if self.session is not None:
                self.session.detach(self)
            if self.batch is not None:
                self.batch.detach(self)

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            self.core.counters.received(data)
            if self._closing:
                continue
            await self._handle(data)

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        try:
            while True:
                while not self._outbox:
                    await self._wake_writer.park()
                item = self._outbox[0]
                if isinstance(item, _CloseItem):
                    await self.ws.aclose(item.code, item.reason or None)
                    return
                await self.ws.send_message(item.frame)
                self._outbox.popleft()
                self._room.unpark_all()
                self.core.counters.sent(item.frame)
                if item.record is not None:
                    item.record.append(
                        Delivery(
                            "control",
                            self.number,
                            item.method,
                            item.frame,
                            seq_id=item.seq_id,
                            slot=item.slot,
                            replay=item.replay,
                        )
                    )
                self.core.faults.after_send(self.handle)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self._dead = True
            self._room.unpark_all()
            cancel_scope.cancel()

    # ------------------------------------------------------------ output helpers

    def _push_plain(self, message: _ServerMessage, *, record: Record | None) -> None:
        frame = encode_control(message, snake_case=self.core.config.snake_case)
        self.push(ControlItem(frame, message.method, record))

    def _batch_record(self) -> Record | None:
        return self.batch.record if self.batch is not None else None

    async def _error(self, error: BacktestError) -> None:
        """Answer with an error: the single session's own (sequenced) message if bound."""
        if self.session is not None:
            await self.session.emit_error(error)
        else:
            await self.wait_room()
            self._push_plain(ServerError(error), record=self._batch_record())

    async def _garbage_frame(self, text: str) -> None:
        self._garbage += 1
        self.core.counters.protocol_errors += 1
        if self._garbage > self.core.config.garbage_limit:
            logger.info("control connection %d sent too much garbage: closing", self.number)
            self.close_after_flush(1008, "too many malformed messages")
            return
        await self._error(InvalidRequest(error=text))

    # ------------------------------------------------------------ dispatch

    async def _handle(self, data: str | bytes) -> None:
        try:
            message = decode_control(data).message
        except ProtocolError as exc:
            await self._garbage_frame(str(exc)[:500])
            return
        if isinstance(message, UnknownMessage):
            await self._garbage_frame(f"unknown method {message.method!r:.100}")
            return
        if not isinstance(message, _CLIENT_REQUESTS):
            await self._garbage_frame(f"{message.method!r} is not a request")
            return
        if isinstance(message, CreateBacktestSession):
            await self._create(message)
        elif isinstance(message, AttachBacktestSession):
            await self._attach(message)
        elif isinstance(message, AttachParallelControlSessionV2):
            await self._attach_parallel(message)
        elif self.session is not None:
            await self._single_request(self.session, message)
        elif self.batch is not None:
            await self._batch_request(self.batch, message)
        else:
            await self._error(InvalidRequest(error="no session on this connection"))

    async def _create(self, message: CreateBacktestSession) -> None:
        if self.session is not None or self.batch is not None:
            await self._error(InvalidRequest(error="this connection already has a session"))
            return
        params = message.params
        timeout = params.disconnect_timeout_secs
        problem: str | None = None
        if params.start_slot < 0:
            problem = "startSlot must be >= 0"
        elif params.end_slot < params.start_slot:
            problem = "endSlot must not be before startSlot"
        elif timeout is not None and not 0 <= timeout <= 900:
            problem = "disconnectTimeoutSecs must be within 0..900"
        elif message.parallel and not timeout:
            problem = "parallel mode requires disconnectTimeoutSecs > 0"
        elif self.core.live_sessions_of(self.owner) >= self.core.config.max_sessions_per_key:
            problem = "too many live sessions for this API key"
        if problem is not None:
            await self._error(InvalidRequest(error=problem))
            return
        stall = self.core.faults.take_stall()
        if not message.parallel:
            session = Session(
                self.core, session_id=self.core.new_session_id(), owner=self.owner, params=params
            )
            self.core.register(session)
            session.bind(self)
            self.session = session
            self.handle.session_ids = frozenset({session.id})
            await session.emit(SessionCreated(session.id, session.rpc_endpoint))
            self.core.start_session(session, stall)
            return
        batch = Batch(
            self.core,
            batch_id=self.core.new_session_id(),
            owner=self.owner,
            timeout=float(timeout or 0),
        )
        self.core.batches[batch.id] = batch
        for first, last in self.core.ledger.bundles(params.start_slot, params.end_slot):
            sub_params = attrs.evolve(params, start_slot=first, end_slot=last)
            sub = Session(
                self.core,
                session_id=self.core.new_session_id(),
                owner=self.owner,
                params=sub_params,
                batch=batch,
            )
            batch.sessions[sub.id] = sub
            self.core.register(sub)
        batch.control = self
        self.batch = batch
        subs = list(batch.sessions.values())
        self.handle.session_ids = frozenset({batch.id, *batch.sessions})
        for sub in subs:
            self._push_plain(SessionCreated(sub.id, sub.rpc_endpoint), record=batch.record)
        legacy = self.core.config.legacy_sessions_created
        self._push_plain(
            SessionsCreatedV2(
                batch.id,
                tuple(s.id for s in subs),
                # Older servers (before the reference 0.13) sent no slot lists.
                start_slots=None if legacy else tuple(s.params.start_slot for s in subs),
                end_slots=None if legacy else tuple(s.params.end_slot for s in subs),
            ),
            record=batch.record,
        )
        for sub in subs:
            self.core.start_session(sub, stall)

    async def _attach(self, message: AttachBacktestSession) -> None:
        if self.session is not None or self.batch is not None:
            await self._error(InvalidRequest(error="this connection already has a session"))
            return
        session = self.core.sessions.get(message.session_id)
        if session is None:
            await self._error(SessionNotFound(session_id=message.session_id))
            return
        if session.owner != self.owner:
            await self._error(SessionOwnerMismatch())
            return
        if session.batch is not None:
            await self._error(
                InvalidRequest(error="a parallel sub-session: use attachParallelControlSessionV2")
            )
            return
        if not session.resumable:
            await self._error(InvalidRequest(error="the session is not resumable"))
            return
        await self.wait_room()
        attached = SessionAttached(session.id, session.rpc_endpoint)
        frame = encode_control(attached, snake_case=self.core.config.snake_case)
        self.session = session
        self.handle.session_ids = frozenset({session.id})
        session.attach(
            self, message.last_sequence, ControlItem(frame, attached.method, session.record)
        )
        logger.info("control connection %d attached a session", self.number)

    async def _attach_parallel(self, message: AttachParallelControlSessionV2) -> None:
        if self.session is not None or self.batch is not None:
            await self._error(InvalidRequest(error="this connection already has a session"))
            return
        batch = self.core.batches.get(message.control_session_id)
        if batch is None:
            await self._error(SessionNotFound(session_id=message.control_session_id))
            return
        if batch.owner != self.owner:
            await self._error(SessionOwnerMismatch())
            return
        await self.wait_room()
        attached = ParallelSessionAttachedV2(batch.id, tuple(batch.sessions))
        frame = encode_control(attached, snake_case=self.core.config.snake_case)
        self.batch = batch
        self.handle.session_ids = frozenset({batch.id, *batch.sessions})
        batch.attach(
            self, message.last_sequences, ControlItem(frame, attached.method, batch.record)
        )
        logger.info("control connection %d attached a parallel batch", self.number)

    async def _single_request(self, session: Session, message: object) -> None:
        error: BacktestError | None
        if isinstance(message, Continue):
            error = session.request_continue(message.params)
        elif isinstance(message, ContinueTo):
            error = session.request_continue_to(message.slot, message.batch_index)
        elif isinstance(message, CloseBacktestSession):
            await session.emit(Success())
            self.core.forget(session, "closed")
            self.session = None
            self.handle.session_ids = frozenset()
            self.close_after_flush(1000, "session closed")
            return
        elif isinstance(message, ResumeAttachedSession):
            await session.emit(Success())
            if session.needs_fresh_ready():
                await session.emit(ReadyForContinue())
            session.set_held(False)
            return
        else:
            error = InvalidRequest(error="not a parallel session: use continue/continueTo")
        if error is not None:
            await session.emit_error(error)

    async def _batch_request(self, batch: Batch, message: object) -> None:
        if isinstance(message, ResumeAttachedSession):
            await self.wait_room()
            self._push_plain(Success(), record=batch.record)
            for sub in list(batch.sessions.values()):
                if sub.needs_fresh_ready():
                    await sub.emit(ReadyForContinue())
                sub.set_held(False)
            return
        if isinstance(message, CloseBacktestSession):
            await self.wait_room()
            self._push_plain(Success(), record=batch.record)
            self.core.forget_batch(batch, "closed")
            self.batch = None
            self.handle.session_ids = frozenset()
            self.close_after_flush(1000, "session closed")
            return
        if not isinstance(message, ContinueSessionV1 | ContinueToSessionV1 | CloseSessionV1):
            await self._error(
                InvalidRequest(error="a parallel batch: use continueSessionV1/continueToSessionV1")
            )
            return
        target = batch.sessions.get(message.session_id)
        if target is None:
            await self._error(InvalidRequest(error="no such sub-session in this batch"))
            return
        sub = target
        error: BacktestError | None
        if isinstance(message, ContinueSessionV1):
            error = sub.request_continue(message.params)
        elif isinstance(message, ContinueToSessionV1):
            error = sub.request_continue_to(message.slot, message.batch_index)
        else:
            await sub.emit(Success())
            self.core.forget(sub, "closed")
            if not batch.sessions:
                self.core.forget_batch(batch, "closed")
                self.batch = None
                self.handle.session_ids = frozenset()
                self.close_after_flush(1000, "all sub-sessions closed")
            return
        if error is not None:
            await sub.emit_error(error)
