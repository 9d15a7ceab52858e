"""One data-plane socket of a session: JSON-RPC subscriptions, replay, zstd (protocol.md §5)."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal, final

import attrs
import orjson
import trio
import trio_websocket

from ..protocol import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REPLAY_WINDOW_EXCEEDED,
    AccountDiffNotification,
    AccountDiffPayload,
    AccountDiffSubscribe,
    AccountDiffUnsubscribe,
    ProtocolError,
    RpcError,
    RpcMessage,
    RpcResult,
    TransactionNotification,
    TransactionPayload,
    TransactionSubscribe,
    TransactionUnsubscribe,
    UnknownMessage,
    decode_rpc,
    encode_rpc,
)
from ._controls import ConnHandle
from ._core import ServerCore
from ._ledger import base58_decode
from ._runtime import Executed
from ._session import Session, SessionState
from ._stats import Delivery

__all__ = ["DataConnection"]

logger = logging.getLogger("trio_backtest.server.data")

#: JSON-RPC "invalid request": valid JSON that is not a request at all.
INVALID_REQUEST = -32600
#: Implementation-defined server error: a per-socket limit was reached.
LIMIT_REACHED = -32000


@final
@attrs.frozen
class _Subscription:
    id: int
    kind: Literal["transaction", "accountDiff"]
    address: str
    address_type: str
    compress: bool


@final
@attrs.frozen
class DataItem:
    """One frame for a data-plane socket, encoded when it is written."""

    message: RpcMessage
    subscription: int | None = None
    """For notifications: skipped if the subscription is gone by the time it is written."""
    slot: int | None = None
    compress: bool = False
    counted: bool = False
    """A live notification: it takes a place in the bounded queue."""
    replay: bool = False


@final
@attrs.frozen
class _CloseItem:
    code: int
    reason: str


def _is_pubkey(text: str) -> bool:
    try:
        return len(base58_decode(text)) == 32
    except ValueError:
        return False


def _zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:  # pragma: no cover - the test environment has it
        return False
    return True


@final
class DataConnection:
    """Serves one accepted data-plane socket until it closes or breaks."""

    def __init__(
        self,
        core: ServerCore,
        handle: ConnHandle,
        ws: trio_websocket.WebSocketConnection,
        session: Session,
    ) -> None:
        self.core = core
        self.handle = handle
        self.ws = ws
        self.session = session
        self.number = handle.number
        self.subs: dict[int, _Subscription] = {}
        self._outbox: deque[DataItem | _CloseItem] = deque()
        self._live = 0
        self._enqueued = 0
        self._written = 0
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._flushed = trio.lowlevel.ParkingLot()
        self._closed = False
        self._finishing = False
        self._compressor: Any = None
        self._linger: trio.CancelScope | None = None

    # ------------------------------------------------------------ Subscriber

    def collect(self, executed: list[Executed]) -> list[DataItem]:
        """The live notifications these executed transactions produce here."""
        if self._closed or self._finishing or not self.subs:
            return []
        return _notifications(executed, self.subs.values(), replay=False)

    async def put_many(self, items: list[DataItem]) -> None:
        """Queue live notifications; a full queue waits (``block``) or drops (``drop``)."""
        limit = self.core.config.queue_size
        drop = self.core.config.backpressure == "drop"
        for item in items:
            if self._closed or self._finishing:
                return
            if self._live >= limit:
                if drop:
                    self.core.counters.notifications_dropped += 1
                    continue
                while self._live >= limit and not self._closed:
                    await self._room.park()
                if self._closed:
                    return
            self._enqueue(item)

    async def wait_flushed(self) -> None:
        """Wait until everything queued so far was written, or the socket is gone."""
        target = self._enqueued
        while self._written < target and not self._closed:
            await self._flushed.park()

    def finish(self, code: int, reason: str = "") -> None:
        """Close with ``code`` after writing what is queued."""
        if self._finishing or self._closed:
            return
        self._finishing = True
        self._outbox.append(_CloseItem(code, reason))
        self._wake_writer.unpark_all()

    def close_now(self, code: int, reason: str = "") -> None:
        """Close with ``code`` at once."""
        self._finishing = True
        self.handle.close(code, reason)

    # ------------------------------------------------------------ serving

    async def serve(self) -> None:
        """Answer requests and write notifications until the socket ends."""
        self.session.subscribers.add(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                if self.session.state is SessionState.COMPLETED:
                    self._linger = trio.CancelScope()
                    self._bump_linger()
                    nursery.start_soon(self._linger_then_close, self._linger)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            self._closed = True
            self.session.subscribers.discard(self)
            self._room.unpark_all()
            self._flushed.unpark_all()

    def _bump_linger(self) -> None:
        if self._linger is not None:
            self._linger.deadline = trio.current_time() + self.core.config.completed_linger

    async def _linger_then_close(self, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_forever()
        self.finish(1000, "session completed")

    async def _reader(self) -> None:
        while True:
            try:
                data = await self.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            self.core.counters.received(data)
            if self._finishing:
                continue
            self._bump_linger()
            self._handle(data)

    async def _writer(self, cancel_scope: trio.CancelScope) -> None:
        counters = self.core.counters
        record = self.session.record
        try:
            while True:
                while not self._outbox:
                    await self._wake_writer.park()
                item = self._outbox[0]
                if isinstance(item, _CloseItem):
                    await self.ws.aclose(item.code, item.reason or None)
                    return
                if item.subscription is None or item.subscription in self.subs:
                    text = encode_rpc(item.message)
                    frame: str | bytes = self._compress(text) if item.compress else text
                    await self.ws.send_message(frame)
                    counters.sent(frame)
                    if item.subscription is not None:
                        counters.notifications_sent += 1
                    if record is not None:
                        record.append(
                            Delivery(
                                "data",
                                self.number,
                                getattr(item.message, "method", None),
                                frame,
                                slot=item.slot,
                                subscription=item.subscription,
                                replay=item.replay,
                            )
                        )
                    self.core.faults.after_send(self.handle)
                self._outbox.popleft()
                if item.counted:
                    self._live -= 1
                    self._room.unpark_all()
                self._written += 1
                self._flushed.unpark_all()
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self._closed = True
            self._room.unpark_all()
            self._flushed.unpark_all()
            cancel_scope.cancel()

    def _enqueue(self, item: DataItem | _CloseItem) -> None:
        self._outbox.append(item)
        if isinstance(item, DataItem) and item.counted:
            self._live += 1
        self._enqueued += 1
        self._wake_writer.unpark_all()

    def _compress(self, text: str) -> bytes:
        import zstandard

        if self._compressor is None:
            # One streaming context per socket: frames share history, each flushed whole.
            self._compressor = zstandard.ZstdCompressor().compressobj()
        data: bytes = self._compressor.compress(text.encode())
        flushed: bytes = self._compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        return data + flushed

    # ------------------------------------------------------------ requests

    def _answer(self, message: RpcMessage) -> None:
        self._enqueue(DataItem(message))

    def _fail(self, rpc_id: int | str | None, code: int, text: str, data: Any = None) -> None:
        self.core.counters.protocol_errors += code not in (REPLAY_WINDOW_EXCEEDED, LIMIT_REACHED)
        self._answer(RpcError(rpc_id, code, text, data))

    def _handle(self, data: str | bytes) -> None:
        try:
            message = decode_rpc(data)
        except ProtocolError as exc:
            self._bad_frame(data, exc)
            return
        if isinstance(message, TransactionSubscribe | AccountDiffSubscribe):
            self._subscribe(message)
        elif isinstance(message, TransactionUnsubscribe | AccountDiffUnsubscribe):
            self._unsubscribe(message)
        elif isinstance(message, UnknownMessage):
            rpc_id = message.raw.get("id")
            if type(rpc_id) not in (int, str):
                rpc_id = None
            self._fail(rpc_id, METHOD_NOT_FOUND, f"method not found: {message.method!r:.100}")
        else:
            self._fail(None, INVALID_REQUEST, "invalid request: not a subscription request")

    def _bad_frame(self, data: str | bytes, exc: ProtocolError) -> None:
        if exc.method is not None:
            self._fail(exc.rpc_id, INVALID_PARAMS, f"invalid params: {str(exc)[:300]}")
            return
        try:
            orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail(None, PARSE_ERROR, "parse error: not valid JSON")
            return
        self._fail(exc.rpc_id, INVALID_REQUEST, f"invalid request: {str(exc)[:300]}")

    def _subscribe(self, message: TransactionSubscribe | AccountDiffSubscribe) -> None:
        session = self.session
        if len(self.subs) >= self.core.config.max_subscriptions_per_socket:
            self._fail(message.id, LIMIT_REACHED, "too many subscriptions on this socket")
            return
        if message.compression not in (None, "zstd"):
            self._fail(
                message.id, INVALID_PARAMS, f"unsupported compression {message.compression!r:.40}"
            )
            return
        if message.compression == "zstd" and not _zstd_available():  # pragma: no cover
            self._fail(message.id, INVALID_PARAMS, "zstd compression is not available")
            return
        if isinstance(message, TransactionSubscribe):
            kind: Literal["transaction", "accountDiff"] = "transaction"
            address, address_type = message.program_id, "program"
        else:
            kind = "accountDiff"
            address, address_type = message.address, message.address_type or "account"
            if address_type not in ("account", "program"):
                self._fail(message.id, INVALID_PARAMS, f"unknown address_type {address_type!r:.40}")
                return
        if not _is_pubkey(address):
            self._fail(message.id, INVALID_PARAMS, "the address is not a base58 public key")
            return
        from_slot = message.replay_from_slot
        if from_slot is not None and from_slot < 0:
            self._fail(message.id, INVALID_PARAMS, "replayFromSlot must be >= 0")
            return
        oldest = session.oldest_replayable()
        if from_slot is not None and oldest is not None and from_slot < oldest:
            self.core.counters.replay_window_errors += 1
            self._fail(
                message.id,
                REPLAY_WINDOW_EXCEEDED,
                "replay window exceeded",
                {"oldestSlot": oldest},
            )
            return
        sub = _Subscription(
            session.next_subscription_id(),
            kind,
            address,
            address_type,
            message.compression == "zstd",
        )
        # Registration, acknowledgement and replay happen without a checkpoint in between,
        # so the replay and the live stream meet exactly: no gap, no duplicate.
        self.subs[sub.id] = sub
        self._answer(RpcResult(message.id, sub.id))
        if from_slot is None:
            return
        self.core.counters.replays_served += 1
        for entry in session.replay_slots(from_slot):
            for item in _notifications(entry.executed, (sub,), replay=True):
                self._enqueue(item)

    def _unsubscribe(self, message: TransactionUnsubscribe | AccountDiffUnsubscribe) -> None:
        kind = "transaction" if isinstance(message, TransactionUnsubscribe) else "accountDiff"
        sub = self.subs.get(message.subscription)
        if sub is None or sub.kind != kind:
            self._fail(message.id, INVALID_PARAMS, f"unknown subscription {message.subscription}")
            return
        del self.subs[sub.id]
        self._answer(RpcResult(message.id, True))


def _notifications(
    executed: list[Executed], subs: Iterable[_Subscription], *, replay: bool
) -> list[DataItem]:
    tx_subs = [s for s in subs if s.kind == "transaction"]
    diff_subs = [s for s in subs if s.kind == "accountDiff"]
    items: list[DataItem] = []
    if not tx_subs and not diff_subs:
        return items
    for done in executed:
        slot = done.slot
        for sub in tx_subs:
            if done.mentions(sub.address):
                payload = TransactionPayload(slot, done.signature, done.raw)
                items.append(
                    DataItem(
                        TransactionNotification(sub.id, payload),
                        sub.id,
                        slot,
                        sub.compress,
                        counted=not replay,
                        replay=replay,
                    )
                )
        if not diff_subs:
            continue
        for diff in done.diffs:
            for sub in diff_subs:
                if diff.matches(sub.address, sub.address_type):
                    raw = diff.raw
                    diff_payload = AccountDiffPayload(
                        slot, done.index, done.signature, diff.account, raw["pre"], raw["post"], raw
                    )
                    items.append(
                        DataItem(
                            AccountDiffNotification(sub.id, diff_payload),
                            sub.id,
                            slot,
                            sub.compress,
                            counted=not replay,
                            replay=replay,
                        )
                    )
    return items
