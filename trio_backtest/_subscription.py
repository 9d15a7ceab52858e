"""Subscription managers: each owns one data-plane WebSocket's whole life (client.md §5)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import IO, Any, Literal, Protocol, cast, final

import trio

from ._config import ClientConfig
from ._connectors import default_connector
from ._dedupe import NotificationDeduper, Offer
from ._errors import SubscriptionFailedError
from ._events import AccountDiff, StreamGap, Transaction
from ._plumbing import (
    Completion,
    Counters,
    Drained,
    Ended,
    hand_over,
    hand_over_nowait,
    unwrap_single,
)
from ._policy import CauseKind, DisconnectCause, FailureWindow, GiveUp, ReconnectPolicy
from ._status import Closed, Failed, Parked, Reconnecting, StatusCell, Up
from ._transport import (
    Connector,
    Dead,
    Link,
    connect,
    discard,
    one_death,
    open_io_nursery,
)
from .protocol import (
    REPLAY_WINDOW_EXCEEDED,
    AccountDiffNotification,
    AccountDiffSubscribe,
    ProtocolError,
    RpcError,
    RpcResult,
    TransactionNotification,
    TransactionSubscribe,
    UnknownMessage,
    decode_rpc,
    encode_rpc,
)

__all__ = [
    "SubscriptionHandle",
    "spawn_account_diff_subscription_manager",
    "spawn_transaction_subscription_manager",
]

logger = logging.getLogger("trio_backtest.subscription")

Kind = Literal["transactions", "account_diffs"]
AddressType = Literal["program", "account"]
Compression = Literal["zstd"] | None

#: Close codes after which the data plane is gone for good.
_GONE_CODES = frozenset({4404})
_GONE_STATUS = frozenset({404})


class StreamingGuardLike(Protocol):
    """What a subscription manager needs of a `StreamingGuard`."""

    def release(self) -> None:
        """Stop counting this connection as streaming (idempotent)."""


class CoordinatorLike(Protocol):
    """What a subscription manager needs of a `ReconnectCoordinator`."""

    def enter(self) -> StreamingGuardLike:
        """Count one more connection as streaming."""
        ...

    def reconnect_slot(self) -> AbstractAsyncContextManager[None]:
        """Wait until nothing streams, then hold the single reconnect slot."""
        ...


class _FrameTooLarge(Exception):
    """A zstd frame decompressed to more than ``max_message_size`` bytes."""


@final
class _BoundedSink:
    """Where the decompressor writes one frame's output; refuses to grow past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) > self.limit:
            raise _FrameTooLarge(f"a zstd frame decompresses to more than {self.limit} bytes")
        return len(data)


class _Decompressor:
    """One streaming zstd decompressor per connection (the server keeps its context).

    Output is bounded by ``max_message_size`` (protocol.md §7) while it is produced: a
    frame that is tiny compressed and huge decompressed stops at the bound instead of
    filling memory and blocking the event loop.
    """

    def __init__(self, limit: int) -> None:
        try:
            import zstandard
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "compression='zstd' needs the zstandard package: pip install 'trio-backtest[zstd]'"
            ) from exc
        self._sink = _BoundedSink(limit)
        # Only write() is ever called on it: a file-like object in zstandard's terms.
        self._writer = zstandard.ZstdDecompressor().stream_writer(cast("IO[bytes]", self._sink))

    def feed(self, frame: bytes) -> bytes:
        """The message one frame decodes to.

        Raises:
            _FrameTooLarge: it decodes to more than the bound.
            Dead: it does not decode (the stream context is broken).
        """
        sink = self._sink
        sink.buffer = bytearray()
        try:
            self._writer.write(frame)
        except _FrameTooLarge:
            raise
        except Exception as exc:  # zstandard.ZstdError; the stream context is now broken
            raise Dead(DisconnectCause.protocol(f"zstd frame did not decode: {exc}")) from None
        return bytes(sink.buffer)


@final
class SubscriptionHandle:
    """A live subscription manager: its notifications, its status, its counters."""

    def __init__(
        self,
        *,
        kind: Kind,
        rpc_endpoint: str,
        addresses: Sequence[str],
        address_type: AddressType,
        config: ClientConfig,
        connector: Connector,
        sink: trio.MemorySendChannel[Any],
        completed: Completion,
        start_slot: int | None,
        end_slot: int | None,
        coordinator: CoordinatorLike | None,
        compression: Compression,
        name: str,
        notifications: trio.MemoryReceiveChannel[Any] | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("subscribe to at least one address")
        if compression not in (None, "zstd"):
            raise ValueError(f"compression must be None or 'zstd', got {compression!r}")
        if address_type not in ("program", "account"):
            raise ValueError(f"address_type must be 'program' or 'account', got {address_type!r}")
        self._kind = kind
        self._url = rpc_endpoint
        self._addresses = tuple(dict.fromkeys(addresses))
        self._address_type = address_type
        self._config = config
        self._connector = connector
        self._sink = sink
        self._completed = completed
        self._reading: trio.CancelScope | None = None
        self._end_slot = end_slot
        self._start_slot = start_slot
        self._coordinator = coordinator
        self._compression = compression
        self._rng = config.random_source()
        self._policy = ReconnectPolicy(config)
        self._window = FailureWindow(self._policy, self._rng)
        self._dedupe = NotificationDeduper(
            self._addresses, start_slot=start_slot, end_slot=end_slot
        )
        # The oldest slot the server last offered each address it refused to replay: the
        # loss known so far, reported as one StreamGap when the subscription is back.
        self._refused: dict[str, int] = {}
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._link: Link | None = None
        self._started = False
        self._finished = False
        self.name = name
        """A short label for logs and statistics, e.g. ``transactions[0]``."""
        self.notifications = notifications
        """Notifications, when spawned without a session (else ``None``)."""
        self.status = StatusCell()
        """The data-plane connection's `ConnectionStatus`."""
        self.counters = Counters()
        """Running counters for ``statistics()``."""

    def __repr__(self) -> str:
        return f"<SubscriptionHandle {self.name} status={self.status.value!r}>"

    @property
    def addresses(self) -> tuple[str, ...]:
        """The subscribed addresses."""
        return self._addresses

    @property
    def done(self) -> bool:
        """Whether the manager task has ended."""
        return self._done.is_set()

    async def wait_done(self) -> None:
        """Wait until the manager task has ended."""
        await self._done.wait()

    async def aclose(self) -> None:
        """Close this subscription's socket (bounded) and wait for the manager to end."""
        self._scope.cancel()
        await self._done.wait()

    # ------------------------------------------------------------------ the task

    async def run(self, *, task_status: trio.TaskStatus[SubscriptionHandle]) -> None:
        """The manager task: connect, subscribe, stream, reconnect, drain."""
        stop_listening = self._completed.listen(self._wake_on_completion)
        try:
            with self._scope:
                async with open_io_nursery() as io:
                    try:
                        await self._loop(io, task_status)
                    finally:
                        await self._graceful_close()
        finally:
            stop_listening()
            self._sink.close()
            self.status.finish(Closed())
            self._done.set()

    async def _loop(
        self, io: trio.Nursery, task_status: trio.TaskStatus[SubscriptionHandle]
    ) -> None:
        policy, window = self._policy, self._window
        number = 0
        gated = False
        while True:
            number += 1
            try:
                async with AsyncExitStack() as stack:
                    if gated and self._coordinator is not None:
                        await self._park(stack, window)
                    await self._connection(io, number, window, task_status, stack)
                    return
            except Dead as exc:
                cause = exc.cause
            if self._completed.is_set() and self._data_plane_gone(cause):
                await self._report_tail_gap(cause)
                return
            decision = window.dropped(trio.current_time(), cause)
            if isinstance(decision, GiveUp) and self._completed.is_set():
                await self._report_tail_gap(cause)
                return
            if isinstance(decision, GiveUp):
                error = SubscriptionFailedError(f"{self.name}: {decision.reason}")
                logger.error("subscription %s failed: %s", self.name, decision.reason)
                self.status.set(Failed(str(error)))
                if not self._started:
                    raise error
                await self._report_refused_gaps()
                await self._deliver(Ended(self.name, error))
                return
            self.counters.reconnects += 1
            self.status.set(Reconnecting(decision.attempt, cause))
            gated = self._coordinator is not None and policy.gated(decision.attempt)
            logger.warning(
                "subscription %s lost (%s); reconnect attempt %d%s",
                self.name,
                cause,
                decision.attempt,
                " after parking" if gated else f" in {decision.delay:.2f} s",
            )
            if not gated:  # an attempt that parks skips its backoff: the link just freed up
                await trio.sleep(decision.delay)

    async def _park(self, stack: AsyncExitStack, window: FailureWindow) -> None:
        """Wait at the coordinator until the link is free, at most ``reconnect_max_backoff``.

        The bound is ours, not the spec's: the coordinator counts *connected* streams,
        and a driver that waits for this sub-session before it lets the others finish
        (a lockstep loop, a barrier) would otherwise wait forever. After the bound the
        attempt goes ahead without the slot, like an ungated one.
        """
        assert self._coordinator is not None
        self.status.set(Parked())
        began = trio.current_time()
        with trio.move_on_after(self._config.reconnect_max_backoff) as bound:
            await stack.enter_async_context(self._coordinator.reconnect_slot())
        if bound.cancelled_caught:
            logger.info("subscription %s: the link stayed busy; reconnecting anyway", self.name)
        parked = trio.current_time() - began
        window.add_parked(parked)
        self.counters.parked_seconds += parked

    @staticmethod
    def _data_plane_gone(cause: DisconnectCause) -> bool:
        """After ``Completed``: does the server refuse the session's data plane for good?"""
        return (cause.kind is CauseKind.HTTP_STATUS and cause.code in _GONE_STATUS) or (
            cause.kind is CauseKind.CLOSED and cause.code in _GONE_CODES
        )

    async def _report_refused_gaps(self) -> None:
        """Giving up: report what the server said it could no longer replay."""
        for address, oldest in self._refused.items():
            gap = self._dedupe.gap(address, oldest)
            if gap is not None:
                self.counters.gaps += 1
                await self._deliver(StreamGap(address, gap[0], gap[1]))

    async def _report_tail_gap(self, cause: DisconnectCause) -> None:
        logger.warning("subscription %s could not recover its tail (%s)", self.name, cause)
        if self._end_slot is not None:
            for address in self._addresses:
                start = self._dedupe.cursor(address)
                start = start if start is not None else self._start_slot
                if start is not None and start <= self._end_slot:
                    self.counters.gaps += 1
                    await self._deliver(StreamGap(address, start, self._end_slot))
        await self._finish()

    async def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            await self._deliver(Drained(self.name))

    def _wake_on_completion(self) -> None:
        """``Completed`` arrived: interrupt a wait for a frame so the drain's bound applies.

        Only a wait for a frame is ever interrupted, never a hand-over: nothing is lost.
        """
        if self._reading is not None:
            self._reading.cancel()

    async def _next_frame(self, wire: _Wire) -> str | bytes | None:
        """The next frame; ``None`` once the stream is over after ``Completed``.

        Over means quiet for ``drain_timeout`` — counted only while waiting for a frame,
        never while the user is slow to take one — and the peer still answers a ping. A
        replay that is still arriving, however slowly, is never cut short; a peer that no
        longer answers is a dead connection (`Dead`), reconnected and replayed.
        """
        while not self._completed.is_set():
            with trio.CancelScope() as reading:
                self._reading = reading
                try:
                    return await wire.receive()
                finally:
                    self._reading = None
        with trio.move_on_after(self._config.drain_timeout):
            return await wire.receive()
        return await self._frame_or_probe(wire)

    async def _frame_or_probe(self, wire: _Wire) -> str | bytes | None:
        """Quiet after ``Completed``: a frame that still comes, or ``None`` once a ping is
        answered (frames sent before the pong arrive before it, so none is left behind)."""
        frames: list[str | bytes] = []
        with one_death():
            async with trio.open_nursery() as nursery:

                async def listen() -> None:
                    frames.append(await wire.receive())
                    nursery.cancel_scope.cancel()

                async def probe() -> None:
                    await wire.link.probe(self._config.drain_timeout)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(listen)
                nursery.start_soon(probe)
        return frames[0] if frames else None

    async def _connection(
        self,
        io: trio.Nursery,
        number: int,
        window: FailureWindow,
        task_status: trio.TaskStatus[SubscriptionHandle],
        stack: AsyncExitStack,
    ) -> None:
        """One data-plane connection, from connect to drain (or a `Dead` drop)."""
        cfg = self._config
        # The data plane never receives the API key.
        ws = await connect(self._connector, io, self._url, cfg, headers=[])
        link = Link(ws, cfg, number, self.counters)
        self._link = link
        guard: StreamingGuardLike | None = None
        try:
            with unwrap_single(), one_death():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(link.keepalive, nursery)
                    decompressor = (
                        _Decompressor(cfg.max_message_size) if self._compression == "zstd" else None
                    )
                    state = _Wire(link, decompressor)
                    await self._subscribe(state)
                    self.status.set(Up())
                    window.connected(trio.current_time())
                    if self._coordinator is not None:
                        guard = self._coordinator.enter()
                    await stack.aclose()  # hand the reconnect slot on
                    if not self._started:
                        self._started = True
                        task_status.started(self)
                    await self._release_held(state)
                    await self._stream(state)
                    nursery.cancel_scope.cancel()
        except Dead:
            self._link = None
            await discard(ws)
            raise
        finally:
            if guard is not None:
                guard.release()

    async def _subscribe(self, wire: _Wire) -> None:
        """Send one subscribe per address; return once every one is acknowledged."""
        for address in self._addresses:
            await self._send_subscribe(wire, address, self._dedupe.cursor(address))
        timeout = self._config.handshake_response_timeout
        with wire.link.awaiting_reply("subscribe acknowledgement", timeout):
            await self._acknowledged(wire)

    async def _acknowledged(self, wire: _Wire) -> None:
        """Handle frames until every subscribe is answered.

        What arrives meanwhile (replays of the addresses already acknowledged, their gaps)
        is handed over while the user's channel has room — so a reconnect that keeps
        breaking still moves the cursors on — and held, in order, once it is full: the
        handshake never waits for the user, so it cannot wait for a user who waits for it
        (a continue is gated until this connection is up). `_release_held` hands the rest
        over once the connection is up.
        """
        while wire.pending:
            await self._handle(wire, await wire.receive(), handshake=True)

    async def _release_held(self, wire: _Wire) -> None:
        """Hand over, in arrival order, what the handshake held back."""
        held, wire.held = wire.held, []
        for address, item in held:
            if isinstance(item, Transaction | AccountDiff):
                await self._pass_on(address, item)
            else:
                await self._subscribed(address, item)

    async def _send_subscribe(self, wire: _Wire, address: str, replay_from: int | None) -> None:
        request_id = next(wire.ids)
        request: TransactionSubscribe | AccountDiffSubscribe
        if self._kind == "transactions":
            request = TransactionSubscribe(
                request_id, address, replay_from_slot=replay_from, compression=self._compression
            )
        else:
            request = AccountDiffSubscribe(
                request_id,
                address,
                address_type=self._address_type,
                replay_from_slot=replay_from,
                compression=self._compression,
            )
        wire.pending[request_id] = (address, replay_from)
        await wire.link.send(encode_rpc(request))

    async def _stream(self, wire: _Wire) -> None:
        """Deliver notifications until the stream is over after ``Completed``."""
        while True:
            # A busy stream takes what is buffered without a checkpoint (one hand-over per
            # notification, no cancel scope); only waiting for the socket takes the timed
            # path, where silence and the drain are counted.
            raw = wire.receive_nowait()
            if raw is not None:
                await self._handle(wire, raw, handshake=False)
                continue
            try:
                raw = await self._next_frame(wire)
            except Dead as exc:
                if exc.cause.kind is CauseKind.CLOSED and exc.cause.code == 1000:
                    # The server closes with 1000 once it flushed a completed session.
                    with trio.move_on_after(self._config.drain_timeout):
                        await self._completed.wait()
                    if self._completed.is_set():
                        await self._finish()
                        return
                    # Not yet (the control connection may be slow to say so): reconnect
                    # and replay, in case the close meant something else. The server
                    # ended the stream on purpose, so the budget is not spent on it.
                    self._window.ended_cleanly()
                raise
            if raw is None:
                logger.info("subscription %s: drain timeout; the stream is complete", self.name)
                await self._finish()
                return
            await self._handle(wire, raw, handshake=False)

    async def _handle(self, wire: _Wire, raw: str | bytes, *, handshake: bool) -> None:
        try:
            message = decode_rpc(raw)
        except ProtocolError as exc:
            self.counters.protocol_errors += 1
            logger.warning("subscription %s: dropped a malformed frame: %s", self.name, exc)
            if handshake:
                raise Dead(DisconnectCause.protocol(str(exc))) from None
            return
        match message:
            case TransactionNotification(subscription=sid, result=payload):
                await self._offer(wire, sid, Transaction.from_payload(payload), handshake)
            case AccountDiffNotification(subscription=sid, result=payload):
                await self._offer(wire, sid, AccountDiff.from_payload(payload), handshake)
            case RpcResult(id=rid, result=sid) if rid in wire.pending and type(sid) is int:
                address, replay_from = wire.pending.pop(rid)
                wire.active[sid] = address
                if not handshake:
                    await self._subscribed(address, replay_from)
                elif wire.held or not await self._subscribed(address, replay_from, wait=False):
                    wire.held.append((address, replay_from))
            case RpcError(id=rid) if rid in wire.pending:
                address, replay_from = wire.pending.pop(rid)
                await self._subscribe_failed(wire, address, replay_from, message)
            case UnknownMessage():
                self.counters.unknown_messages += 1
                logger.info("subscription %s: ignored unknown method %r", self.name, message.method)
            case _:
                self.counters.unknown_messages += 1
                logger.info("subscription %s: ignored %r", self.name, message)

    async def _offer(
        self, wire: _Wire, sid: int, event: Transaction | AccountDiff, handshake: bool = False
    ) -> None:
        address = wire.active.get(sid)
        if address is None:
            self.counters.unknown_messages += 1
            logger.info("subscription %s: notification for unknown id %d", self.name, sid)
            return
        if handshake:
            if wire.held or not await self._pass_on(address, event, wait=False):
                wire.held.append((address, event))
            return
        await self._pass_on(address, event)

    async def _pass_on(
        self, address: str, event: Transaction | AccountDiff, *, wait: bool = True
    ) -> bool:
        """Check, hand over and commit one notification; False if the user's channel
        was full and ``wait`` is false (then nothing was recorded)."""
        match self._dedupe.check(address, event.slot, event.key):
            case Offer.NEW:
                if not await self._deliver(event, wait=wait):
                    return False
                # Seen means handed over: nothing may await between the send and the commit.
                self._dedupe.commit(address, event.slot, event.key)
                self._window.progressed()
            case Offer.DUPLICATE:
                self.counters.duplicates += 1
            case Offer.IMPLAUSIBLE:
                self.counters.protocol_errors += 1
                logger.warning(
                    "subscription %s: dropped a notification of slot %d, outside the session",
                    self.name,
                    event.slot,
                )
        return True

    async def _subscribed(
        self, address: str, replay_from: int | None, *, wait: bool = True
    ) -> bool:
        """``address`` is subscribed again from ``replay_from``: report what it skips.

        One continuous loss is one `StreamGap`, however many refusals it took to get
        here, and it is reported only now that the subscription is back. False if the
        user's channel was full and ``wait`` is false (then nothing was recorded).
        """
        gap = None if replay_from is None else self._dedupe.gap(address, replay_from)
        if gap is not None:
            if not await self._deliver(StreamGap(address, gap[0], gap[1]), wait=wait):
                return False
            # Seen means handed over: the cursor moves past the gap only now.
            self._dedupe.commit_gap(address, gap)
            self.counters.gaps += 1
            logger.warning(
                "subscription %s: slots %d..%d of %s are beyond the replay window",
                self.name,
                gap[0],
                gap[1],
                address,
            )
        self._refused.pop(address, None)
        return True

    async def _subscribe_failed(
        self, wire: _Wire, address: str, replay_from: int | None, error: RpcError
    ) -> None:
        oldest = error.oldest_slot
        rejected = DisconnectCause.subscribe_rejected(
            error.code, f"{address[:12]}: {error.message}"
        )
        if error.code != REPLAY_WINDOW_EXCEEDED or oldest is None:
            raise Dead(rejected)
        # protocol.md §7: a refusal must offer a later start than the one asked for, and
        # one within the session; anything else breaks the protocol (not a gap).
        problem = None
        if replay_from is None:
            problem = "a refusal of a subscribe that asked for no replay"
        elif oldest <= replay_from:
            problem = f"oldestSlot {oldest} is not after the replayFromSlot {replay_from} refused"
        else:
            try:
                self._dedupe.gap(address, oldest)
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            self.counters.protocol_errors += 1
            logger.warning("subscription %s: implausible -32010: %s", self.name, problem)
            raise Dead(DisconnectCause.protocol(f"replay window error: {problem}"))
        self._refused[address] = oldest
        if address in wire.refused:
            # The window moved on while we asked again (the session keeps executing):
            # back off through the reconnect policy rather than chase it in a tight loop.
            raise Dead(rejected)
        wire.refused.add(address)
        await self._send_subscribe(wire, address, oldest)

    async def _deliver(self, item: object, *, wait: bool = True) -> bool:
        """Hand ``item`` to the user; False only if the channel is full and not ``wait``."""
        if not wait:
            taken = hand_over_nowait(self._sink, item)
            if taken is None:
                return False
        else:
            taken = await hand_over(self._sink, item, self.status)
        if not taken:
            logger.debug("subscription %s: nobody reads any more; dropped %r", self.name, item)
        return True

    async def _graceful_close(self) -> None:
        link = self._link
        if link is None:
            return
        deadline = trio.current_time() + self._config.graceful_close_timeout
        with trio.CancelScope(shield=True, deadline=deadline):
            try:
                await link.ws.aclose()
            finally:
                await discard(link.ws)


@final
class _Wire:
    """Per-connection state: request ids, pending acks, live subscription ids."""

    def __init__(self, link: Link, decompressor: _Decompressor | None) -> None:
        self.link = link
        self.decompressor = decompressor
        self._oversize: _FrameTooLarge | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int | str | None, tuple[str, int | None]] = {}
        """Subscribe requests awaiting their answer: ``(address, replayFromSlot)`` by id."""
        self.active: dict[int, str] = {}
        self.refused: set[str] = set()
        """Addresses refused for the replay window on this connection."""
        self.held: list[tuple[str, Transaction | AccountDiff | int | None]] = []
        """In arrival order, what the handshake received for the user: notifications,
        and the ``replayFromSlot`` of each acknowledged subscribe (its gap, if any)."""

    def receive_nowait(self) -> str | bytes | None:
        """The next frame if one is already buffered, decompressed; else ``None``."""
        if self._oversize is not None:
            return None  # `receive` closes the connection for it
        raw = self.link.receive_nowait()
        if isinstance(raw, bytes) and self.decompressor is not None:
            try:
                return self.decompressor.feed(raw)
            except _FrameTooLarge as exc:
                self._oversize = exc
                return None
        return raw

    async def receive(self) -> str | bytes:
        oversize, self._oversize = self._oversize, None
        if oversize is None:
            raw = await self.link.receive()
            if not isinstance(raw, bytes) or self.decompressor is None:
                return raw
            try:
                return self.decompressor.feed(raw)
            except _FrameTooLarge as exc:
                oversize = exc
        # protocol.md §7: an oversized frame, however small it was compressed.
        await self.link.close(1009, "message too big")
        raise Dead(DisconnectCause.oversize(str(oversize))) from None


async def _spawn(
    nursery: trio.Nursery,
    kind: Kind,
    rpc_endpoint: str,
    addresses: Sequence[str],
    address_type: AddressType,
    coordinator: CoordinatorLike | None,
    config: ClientConfig | None,
    connector: Connector | None,
    compression: Compression,
) -> SubscriptionHandle:
    config = config or ClientConfig()
    send, receive = trio.open_memory_channel[Any](config.notification_buffer)
    handle = SubscriptionHandle(
        kind=kind,
        rpc_endpoint=rpc_endpoint,
        addresses=addresses,
        address_type=address_type,
        config=config,
        connector=connector or default_connector(config),
        sink=send,
        completed=Completion(),
        start_slot=None,
        end_slot=None,
        coordinator=coordinator,
        compression=compression,
        name=kind,
        notifications=receive,
    )
    with unwrap_single():
        result: SubscriptionHandle = await nursery.start(handle.run)
    return result


async def spawn_transaction_subscription_manager(
    nursery: trio.Nursery,
    rpc_endpoint: str,
    program_ids: Sequence[str],
    *,
    coordinator: CoordinatorLike | None = None,
    config: ClientConfig | None = None,
    connector: Connector | None = None,
    compression: Compression = None,
) -> SubscriptionHandle:
    """Start a manager streaming every transaction that mentions one of ``program_ids``.

    Returns once every subscription is acknowledged; notifications arrive on the
    handle's ``notifications`` channel, each exactly once.

    Raises:
        SubscriptionFailedError: the data plane refused the subscription for good.
    """
    return await _spawn(
        nursery,
        "transactions",
        rpc_endpoint,
        program_ids,
        "program",
        coordinator,
        config,
        connector,
        compression,
    )


async def spawn_account_diff_subscription_manager(
    nursery: trio.Nursery,
    rpc_endpoint: str,
    addresses: Sequence[str],
    *,
    address_type: AddressType = "program",
    coordinator: CoordinatorLike | None = None,
    config: ClientConfig | None = None,
    connector: Connector | None = None,
    compression: Compression = None,
) -> SubscriptionHandle:
    """Start a manager streaming the account diffs of ``addresses``.

    ``address_type="program"`` follows every account those programs own;
    ``"account"`` follows the addresses themselves.

    Raises:
        SubscriptionFailedError: the data plane refused the subscription for good.
    """
    return await _spawn(
        nursery,
        "account_diffs",
        rpc_endpoint,
        addresses,
        address_type,
        coordinator,
        config,
        connector,
        compression,
    )
