"""`ManagedBacktestSession` and `open_backtest_session` (client.md §1, §2, §7)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Any, Protocol, final

import attrs
import trio

from ._config import ClientConfig
from ._connectors import default_connector
from ._control import ContinueRequest, ControlHandle
from ._errors import (
    ControlClosedError,
    ControlFailedError,
    ManagedSessionError,
    NotReadyError,
    SubscriptionFailedError,
)
from ._events import ManagedEvent, SessionInfo
from ._plumbing import Completion, Counters, Drained, Ended, unwrap_single
from ._rpc import SessionRpc
from ._status import Closed, ConnectionStatus, Failed, Parked, StatusCell, Up
from ._subscription import AddressType, Compression, CoordinatorLike, SubscriptionHandle
from ._transport import ApiKey, Connector, check_transport_security
from .protocol import (
    Completed,
    Continue,
    ContinueParams,
    ContinueTo,
    CreateSessionParams,
    InvalidAccountEncoding,
    InvalidAccountOwner,
    InvalidAccountPubkey,
    InvalidRequest,
    InvalidTransactionEncoding,
    InvalidTransactionFormat,
    Paused,
    ReadyForContinue,
    ServerError,
    Slot,
)

__all__ = ["ManagedBacktestSession", "SessionStatistics", "open_backtest_session"]

logger = logging.getLogger("trio_backtest.session")

#: Items `next_event` takes from a full buffer before it yields to other tasks anyway.
_FAIR_EVERY = 64

#: Errors with which a server refuses a continue and stays as it was. The spec's
#: readiness rules are silent here; a driver that got one may continue again (after
#: fixing its request), so the session counts as ready once more.
REFUSALS = (
    InvalidRequest,
    InvalidTransactionEncoding,
    InvalidTransactionFormat,
    InvalidAccountEncoding,
    InvalidAccountOwner,
    InvalidAccountPubkey,
)


@final
@attrs.frozen
class SessionStatistics:
    """A snapshot of one session's counters."""

    session_id: str | None
    """The session's id (``None`` before it was created)."""
    events: Mapping[str, int]
    """Events delivered to the user, by event class name."""
    reconnects: Mapping[str, int]
    """Reconnects per connection (``control``, ``transactions[0]``, ...)."""
    statuses: Mapping[str, str]
    """Each connection's current status."""
    duplicates_dropped: int
    """Replayed or repeated messages removed before they reached the user."""
    gaps: int
    """`StreamGap` events delivered."""
    messages_received: int
    """WebSocket messages received on every connection of the session."""
    bytes_received: int
    """Size of those messages: characters of text frames, bytes of binary (compressed) ones."""
    unknown_messages: int
    """Messages with a method this library does not know (logged, not delivered)."""
    protocol_errors: int
    """Frames that broke the protocol (logged and dropped)."""
    parked_seconds: float
    """Time subscriptions spent waiting at the reconnect coordinator."""


class _EventIterator:
    """``async for`` over a session's events; ends after `Completed`. Safe to ``break``."""

    def __init__(self, session: ManagedBacktestSession) -> None:
        self._session = session

    def __aiter__(self) -> _EventIterator:
        return self

    async def __anext__(self) -> ManagedEvent:
        if self._session.completed:
            raise StopAsyncIteration
        return await self._session.next_event()


class SessionControl(Protocol):
    """What a session needs of its control connection (one session's, or a batch's)."""

    @property
    def info(self) -> SessionInfo | None:
        """The session's identity once created."""
        ...

    @property
    def status(self) -> StatusCell:
        """The control connection's status."""
        ...

    @property
    def counters(self) -> Counters:
        """Counters for ``statistics()``."""
        ...

    @property
    def create_params(self) -> CreateSessionParams:
        """The session's range and options."""
        ...

    async def send(self, request: ContinueRequest) -> None:
        """Queue a continue for the control socket."""
        ...


class ManagedBacktestSession:
    """One backtest session: its control connection, subscriptions and event stream.

    Create it with `open_backtest_session`; every method is safe to call from any task
    of the session's block.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        control: SessionControl,
        *,
        config: ClientConfig,
        connector: Connector,
        coordinator: CoordinatorLike | None,
        sink: trio.MemorySendChannel[Any],
        source: trio.MemoryReceiveChannel[Any],
        completed: Completion,
    ) -> None:
        self._nursery = nursery
        self._control = control
        self._config = config
        self._connector = connector
        self._coordinator = coordinator
        self._sink = sink
        self._source = source
        self._completed_seen = completed
        self._subscriptions: list[SubscriptionHandle] = []
        self._drained: set[str] = set()
        self._held_completion: Completed | None = None
        self._delivered_completion = False
        self._ready = False
        self._answer_pending = False
        self._failure: ManagedSessionError | None = None
        self._position = control.create_params.start_slot
        self._delivered: Counter[str] = Counter()
        self._unyielded = 0
        # The data plane's HTTP pool lives as long as the session's nursery, from the
        # first call on.
        self._rpc = SessionRpc(
            lambda: self.info.rpc_endpoint, config=config, completed=completed, nursery=nursery
        )

    def __repr__(self) -> str:
        info = self._control.info
        sid = info.session_id[:6] + "…" if info else "?"
        return f"<ManagedBacktestSession {sid} status={self.status.value!r}>"

    @property
    def info(self) -> SessionInfo:
        """The session's id and its data plane's absolute URL."""
        assert self._control.info is not None
        return self._control.info

    @property
    def status(self) -> StatusCell:
        """The control connection's status cell."""
        return self._control.status

    @property
    def rpc(self) -> SessionRpc:
        """JSON-RPC calls to this session's data plane: read state, simulate, send, modify."""
        return self._rpc

    @property
    def subscriptions(self) -> tuple[SubscriptionHandle, ...]:
        """The subscription managers started so far."""
        return tuple(self._subscriptions)

    @property
    def completed(self) -> bool:
        """Whether `Completed` has been delivered."""
        return self._delivered_completion

    @property
    def ready(self) -> bool:
        """Whether a continue is allowed now (the last readiness event is unanswered)."""
        return self._ready

    # ------------------------------------------------------------ subscriptions

    async def subscribe_transactions(
        self, program_ids: Sequence[str], *, compression: Compression = None
    ) -> SubscriptionHandle:
        """Stream every executed transaction that mentions one of ``program_ids``.

        Returns once the server acknowledged every subscription; each transaction
        reaches `next_event` once, even when it mentions several of the programs.

        Raises:
            SubscriptionFailedError: the data plane refused the subscription.
        """
        return await self._subscribe("transactions", program_ids, "program", compression)

    async def subscribe_account_diffs(
        self,
        addresses: Sequence[str],
        *,
        address_type: AddressType = "program",
        compression: Compression = None,
    ) -> SubscriptionHandle:
        """Stream the account changes of ``addresses`` (programs' accounts, or accounts).

        Raises:
            SubscriptionFailedError: the data plane refused the subscription.
        """
        return await self._subscribe("account_diffs", addresses, address_type, compression)

    async def _subscribe(
        self,
        kind: Any,
        addresses: Sequence[str],
        address_type: AddressType,
        compression: Compression,
    ) -> SubscriptionHandle:
        if isinstance(addresses, str):
            raise TypeError("pass a list of addresses, not a single string")
        if self._delivered_completion or self._held_completion is not None:
            raise ManagedSessionError("the session has completed; nothing more to subscribe to")
        status = self._control.status.value
        if isinstance(status, Failed):
            raise ControlFailedError(status.reason)
        if isinstance(status, Closed):
            raise ControlClosedError("the session is closed")
        name = f"{kind}[{sum(1 for s in self._subscriptions if s.name.startswith(kind))}]"
        handle = SubscriptionHandle(
            kind=kind,
            rpc_endpoint=self.info.rpc_endpoint,
            addresses=addresses,
            address_type=address_type,
            config=self._config,
            connector=self._connector,
            sink=self._sink.clone(),
            completed=self._completed_seen,
            start_slot=self._position,
            end_slot=self._control.create_params.end_slot,
            coordinator=self._coordinator,
            compression=compression,
            name=name,
        )
        self._subscriptions.append(handle)
        try:
            with unwrap_single():
                await self._nursery.start(handle.run)
        except BaseException:
            self._subscriptions.remove(handle)
            raise
        return handle

    # ------------------------------------------------------------ events

    async def next_event(self) -> ManagedEvent:
        """The next event, control or data plane.

        `Completed` comes only after every subscription delivered its trailing
        notifications (or a `StreamGap` for what it could not recover).

        Raises:
            ControlFailedError: the control connection could not be recovered.
            SubscriptionFailedError: a subscription could not be recovered.
            ControlClosedError: the server ended the session, or it was closed (its
                block was left).
            trio.EndOfChannel: `Completed` was already delivered.
        """
        while True:
            if self._failure is not None:
                raise self._failure
            if self._delivered_completion:
                raise trio.EndOfChannel("the session has completed")
            completion = self._completion_if_drained()
            if completion is not None:
                return completion
            try:
                item = await self._take()
            except trio.EndOfChannel:
                # Every manager has ended without a failure to report: the block was left.
                raise ControlClosedError("the session is closed") from None
            match item:
                case Ended(error=error) if error is not None:
                    self._failure = error  # type: ignore[assignment]
                case Ended() | Drained():
                    self._drained.add(item.source)
                case Completed():
                    self._held_completion = item
                case _:
                    delivered: ManagedEvent = self._hand_over(item)
                    return delivered

    async def _take(self) -> Any:
        """The next item from the managers.

        What is already buffered is taken without a task switch (a checkpoint for
        cancellation only, and a full one every `_FAIR_EVERY` items so a busy stream
        never starves the user's other tasks); an empty channel is waited on.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._unyielded += 1
        if self._unyielded < _FAIR_EVERY:
            try:
                return self._source.receive_nowait()
            except trio.WouldBlock:
                pass
        self._unyielded = 0
        return await self._source.receive()

    def _completion_if_drained(self) -> Completed | None:
        held = self._held_completion
        if held is None:
            return None
        pending = [s for s in self._subscriptions if s.name not in self._drained]
        if any(not s.done for s in pending):
            return None
        if pending and self._source.statistics().current_buffer_used:
            # A manager that has ended may still have notifications queued behind
            # `Completed`; they go first.
            return None
        self._delivered_completion = True
        self._ready = False
        completion: Completed = self._hand_over(held)
        return completion

    def _hand_over(self, event: Any) -> Any:  # the item came off an untyped channel
        match event:
            case ReadyForContinue() | Paused():
                self._ready = True
                self._answer_pending = False
            case Slot(slot=slot):
                self._position = slot
                self._answer_pending = False
            case ServerError(error=error) if self._answer_pending and isinstance(error, REFUSALS):
                self._ready = True  # the continue was refused; the session did not move
                self._answer_pending = False
        self._delivered[type(event).__name__] += 1
        return event

    def events(self) -> AsyncIterator[ManagedEvent]:
        """Iterate over `next_event` until `Completed` (included). Safe to ``break``."""
        return _EventIterator(self)

    # ------------------------------------------------------------ continues

    async def send_continue(self, params: ContinueParams | None = None) -> None:
        """Ask the session to execute ``params.advance_count`` slots.

        Waits until the control connection and every subscription are up (so nothing
        executes while a stream is down), then hands the request over.

        Raises:
            NotReadyError: the last readiness event was already answered; nothing sent.
            ControlFailedError / SubscriptionFailedError: a connection failed while
                waiting.
            ControlClosedError: the session is closed; nothing sent.
        """
        await self._send(Continue(params if params is not None else ContinueParams()))

    async def send_continue_to(self, slot: int, batch_index: int | None = None) -> None:
        """Execute up to, not including, transaction ``batch_index`` of ``slot``.

        ``batch_index=None`` pauses at the start of ``slot``, before its first batch.

        Raises:
            NotReadyError: the last readiness event was already answered; nothing sent.
            ControlClosedError: the session is closed; nothing sent.
        """
        await self._send(ContinueTo(slot, batch_index))

    async def _send(self, request: ContinueRequest) -> None:
        if self._failure is not None:
            raise self._failure
        if not self._ready:
            raise NotReadyError(
                "the session is not ready: wait for ReadyForContinue or Paused before continuing"
            )
        self._ready, self._answer_pending = False, True
        try:
            await self._wait_all_up()
            await self._control.send(request)
        except BaseException:
            self._ready, self._answer_pending = True, False
            raise

    async def continue_until_ready(
        self,
        params: ContinueParams | None = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented signature
        on_event: Callable[[ManagedEvent], Awaitable[None] | None] | None = None,
    ) -> list[ManagedEvent]:
        """Send a continue, then collect events up to the next ready, pause or completion.

        Args:
            params: The continue's parameters (default: one slot).
            timeout: Seconds to wait in total; ``trio.TooSlowError`` after that.
            on_event: Called with each event as it arrives (may be async).

        Returns:
            Every event received, the `ReadyForContinue`/`Paused`/`Completed` last (or
            the `ServerError` with which the server refused the continue).
        """
        await self.send_continue(params)
        collected: list[ManagedEvent] = []
        with trio.fail_after(timeout) if timeout is not None else nullcontext():
            while True:
                event = await self.next_event()
                if on_event is not None:
                    result = on_event(event)
                    if result is not None:
                        await result
                collected.append(event)
                if isinstance(event, ReadyForContinue | Paused | Completed) or (
                    isinstance(event, ServerError) and self._ready
                ):
                    return collected

    async def _wait_all_up(self) -> None:
        while True:
            cells: list[tuple[str, StatusCell]] = [("control", self._control.status)]
            cells += [(s.name, s.status) for s in self._subscriptions if not s.done]
            for name, cell in cells:
                value = cell.value
                if isinstance(value, Failed):
                    if name == "control":
                        raise ControlFailedError(value.reason)
                    raise SubscriptionFailedError(value.reason)
                if isinstance(value, Closed) and name == "control":
                    raise ControlClosedError("the session is closed")
            # A connection handing its replay to the user counts as up (see
            # StatusCell.waiting_for_user): waiting for it would wait for ourselves.
            if all(isinstance(cell.value, Up) or cell.waiting_for_user for _, cell in cells):
                return
            await _any_change([cell for _, cell in cells])

    async def _subscriptions_up(self) -> None:
        """The resume gate: every live subscription is up, has ended, or is parked.

        A parked subscription waits for the others' streams to end; holding the
        session (or the whole batch) until it is up would keep them from ever ending.
        """
        while True:
            cells = [s.status for s in self._subscriptions if not s.done]
            if all(isinstance(c.value, Up | Failed | Parked) or c.waiting_for_user for c in cells):
                return
            await _any_change(cells)

    async def _subscriptions_closed(self) -> None:
        for handle in self._subscriptions:
            await handle.wait_done()

    # ------------------------------------------------------------ statistics

    def statistics(self) -> SessionStatistics:
        """A snapshot of the session's counters (no secrets)."""
        handles: list[tuple[str, Counters, ConnectionStatus]] = [
            ("control", self._control.counters, self._control.status.value)
        ]
        handles += [(s.name, s.counters, s.status.value) for s in self._subscriptions]
        counters = [c for _, c, _ in handles]
        return SessionStatistics(
            session_id=self._control.info.session_id if self._control.info else None,
            events=dict(self._delivered),
            reconnects={name: c.reconnects for name, c, _ in handles},
            statuses={name: type(status).__name__ for name, _, status in handles},
            duplicates_dropped=sum(c.duplicates for c in counters),
            gaps=sum(c.gaps for c in counters),
            messages_received=sum(c.messages for c in counters),
            bytes_received=sum(c.bytes for c in counters),
            unknown_messages=sum(c.unknown_messages for c in counters),
            protocol_errors=sum(c.protocol_errors for c in counters),
            parked_seconds=sum(c.parked_seconds for c in counters),
        )


async def _any_change(cells: Sequence[StatusCell]) -> None:
    """Wait until any of ``cells`` changes its status or whether it waits for the user."""
    async with trio.open_nursery() as nursery:

        async def watch(cell: StatusCell, seen: int) -> None:
            await cell.wait_changed(seen)
            nursery.cancel_scope.cancel()

        async def watch_user(cell: StatusCell, seen: bool) -> None:
            await cell.wait_user_changed(seen)
            nursery.cancel_scope.cancel()

        for cell in cells:
            nursery.start_soon(watch, cell, cell.changes)
            nursery.start_soon(watch_user, cell, cell.waiting_for_user)


@asynccontextmanager
async def open_backtest_session(
    url: str,
    api_key: str,
    create: CreateSessionParams,
    *,
    config: ClientConfig | None = None,
    coordinator: CoordinatorLike | None = None,
    connector: Connector | None = None,
) -> AsyncIterator[ManagedBacktestSession]:
    """Create a backtest session and manage it for the duration of the block.

    Leaving the block, however it is left, closes the subscriptions, then the session,
    within ``config.graceful_close_timeout``. A single error leaves the block as itself.

    Args:
        url: The control endpoint, e.g. ``wss://host/backtest``.
        api_key: Sent only in the control socket's upgrade request.
        create: What to backtest; build it with `CreateSession`.
        config: Timeouts, budgets and TLS settings.
        coordinator: A `ReconnectCoordinator` shared with other sessions on one link.
        connector: How to open WebSockets (the default speaks TCP/TLS); the local
            server's ``connector()`` gives an in-memory network for tests.

    Raises:
        SessionCreateError: the server refused or never answered the create.
        ValueError: a bad URL, or an API key that would travel unencrypted.
    """
    config = config or ClientConfig()
    check_transport_security(url, config)
    connector = connector or default_connector(config)
    completed = Completion()
    sink, source = trio.open_memory_channel[Any](config.event_buffer)
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            session: ManagedBacktestSession | None = None

            async def resume_gate() -> None:
                assert session is not None
                await session._subscriptions_up()

            async def subscriptions_closed() -> None:
                if session is not None:
                    await session._subscriptions_closed()

            control = ControlHandle(
                url=url,
                api_key=ApiKey(api_key),
                create=create,
                config=config,
                connector=connector,
                sink=sink.clone(),
                completed=completed,
                resume_gate=resume_gate,
                subscriptions_closed=subscriptions_closed,
            )
            session = ManagedBacktestSession(
                nursery,
                control,
                config=config,
                connector=connector,
                coordinator=coordinator,
                sink=sink,
                source=source,
                completed=completed,
            )
            try:
                await nursery.start(control.run)
                yield session
            finally:
                nursery.cancel_scope.cancel()
                # Only the managers' clones send; once they end, next_event sees the end.
                sink.close()
