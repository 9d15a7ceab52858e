"""Faults on the byte stream under the server's WebSockets: drops, black holes, a shared link.

A :class:`FaultStream` wraps the server side of one connection, so the WebSocket layer above
it behaves exactly as it would on a broken network, over TCP and over memory streams alike.
A :class:`Link` is one client's bandwidth: every stream attached to it draws from a single
token bucket, so parallel connections compete the way sub-sessions do over one real link.
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, TypeVarTuple, final

import attrs
import trio
import trio.testing

__all__ = ["FaultStream", "FaultStreamStatistics", "Link", "LinkStatistics"]

logger = logging.getLogger("trio_backtest.server.faults")

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

_MAX_CHUNK: Final = 16 * 1024
_MAX_DEFAULT_BURST: Final = 64 * 1024
# A sleep of exactly the computed deficit can refill a hair less than needed in floating
# point; without this slack the waiter would sleep again for an interval the clock cannot
# even represent.
_TOKEN_SLACK: Final = 1e-6


@final
@attrs.frozen
class LinkStatistics:
    """A snapshot of a :class:`Link`."""

    bytes_per_second: float
    """The link's rate."""
    burst: int
    """Bucket capacity: bytes that may pass at once after the link was idle."""
    chunk_size: int
    """Largest grant; bigger requests queue again after each chunk, which shares the link."""
    bytes_passed: int
    """Bytes granted so far."""
    tasks_waiting: int
    """Tasks queued for their turn."""
    bytes_waiting: int
    """Bytes of the chunks those tasks are waiting for."""


@final
@attrs.define(eq=False)
class _Waiter:
    nbytes: int
    turn: trio.Event = attrs.Factory(trio.Event)


class Link:
    """A token bucket of B bytes/s shared by every stream attached to it (one client's link).

    Waiters are served first come, first served, one chunk at a time, so N busy streams each
    get 1/N of the rate. Time is Trio's clock, so ``MockClock`` makes transfers exact.
    """

    def __init__(
        self, bytes_per_second: float, *, burst: int | None = None, chunk_size: int | None = None
    ) -> None:
        """Create a link that starts with a full bucket.

        Args:
            bytes_per_second: The rate; positive and finite.
            burst: Bucket capacity in bytes; defaults to a tenth of a second's worth, capped
                at 64 KiB.
            chunk_size: Largest single grant; defaults to 16 KiB, and never exceeds ``burst``.
        """
        if not (math.isfinite(bytes_per_second) and bytes_per_second > 0):
            raise ValueError("bytes_per_second must be positive and finite")
        if burst is None:
            burst = max(1, min(_MAX_DEFAULT_BURST, math.ceil(bytes_per_second / 10)))
        if burst < 1:
            raise ValueError("burst must be >= 1")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self._rate = float(bytes_per_second)
        self._burst = burst
        self._chunk_size = min(burst, chunk_size if chunk_size is not None else _MAX_CHUNK)
        self._tokens = float(burst)
        self._updated: float | None = None
        self._queue: deque[_Waiter] = deque()
        self._passed = 0

    @property
    def bytes_per_second(self) -> float:
        """The link's rate."""
        return self._rate

    @property
    def burst(self) -> int:
        """Bucket capacity in bytes."""
        return self._burst

    @property
    def chunk_size(self) -> int:
        """Largest single grant in bytes."""
        return self._chunk_size

    async def consume(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may pass, taking turns with other waiters chunk by chunk."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        if nbytes == 0:
            await trio.lowlevel.checkpoint()
            return
        while nbytes > 0:
            chunk = min(nbytes, self._chunk_size)
            await self._acquire(chunk)
            nbytes -= chunk

    def statistics(self) -> LinkStatistics:
        """A snapshot of the link's counters."""
        return LinkStatistics(
            bytes_per_second=self._rate,
            burst=self._burst,
            chunk_size=self._chunk_size,
            bytes_passed=self._passed,
            tasks_waiting=len(self._queue),
            bytes_waiting=sum(waiter.nbytes for waiter in self._queue),
        )

    def _refill(self) -> None:
        now = trio.current_time()
        if self._updated is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now

    def _take(self, nbytes: int) -> None:
        self._tokens -= nbytes
        self._passed += nbytes

    async def _acquire(self, nbytes: int) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._refill()
        if not self._queue and self._tokens + _TOKEN_SLACK >= nbytes:
            self._take(nbytes)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        waiter = _Waiter(nbytes)
        self._queue.append(waiter)
        try:
            if self._queue[0] is not waiter:
                await waiter.turn.wait()
            while True:
                self._refill()
                if self._tokens + _TOKEN_SLACK >= nbytes:
                    break
                await trio.sleep((nbytes - self._tokens) / self._rate)
            self._take(nbytes)
        finally:
            was_head = self._queue[0] is waiter
            self._queue.remove(waiter)
            if was_head and self._queue:
                self._queue[0].turn.set()


@final
@attrs.frozen
class FaultStreamStatistics:
    """A snapshot of a :class:`FaultStream`."""

    bytes_out: int
    """Bytes passed on to the inner stream (toward the peer)."""
    bytes_in: int
    """Bytes received from the peer and handed to the caller."""
    bytes_discarded_out: int
    """Bytes the caller sent that a black hole swallowed."""
    bytes_discarded_in: int
    """Bytes from the peer that a black hole swallowed."""
    dropped: bool
    """Whether :meth:`FaultStream.drop` was called."""
    black_holed: bool
    """Whether a black hole is in effect now."""
    closed: bool
    """Whether :meth:`FaultStream.aclose` was called."""


class FaultStream(trio.abc.Stream):
    """Wraps the server side of one connection's byte stream and injects faults into it.

    Outgoing bytes pass through :attr:`link` when one is attached.
    """

    link: Link | None
    """The shared link outgoing bytes pass through; may be changed at any time."""

    def __init__(self, inner: trio.abc.Stream, *, link: Link | None = None) -> None:
        """Wrap ``inner``, which this stream owns from now on."""
        self._inner = inner
        self.link = link
        self._dropped = False
        self._closed = False
        self._inner_closed = False
        self._hole_deadline: float | None = None
        self._hole_changed = trio.Event()
        self._operations: set[trio.CancelScope] = set()
        self._sending = False
        self._receiving = False
        self._bytes_out = 0
        self._bytes_in = 0
        self._discarded_out = 0
        self._discarded_in = 0

    @property
    def inner(self) -> trio.abc.Stream:
        """The wrapped stream."""
        return self._inner

    @property
    def dropped(self) -> bool:
        """Whether :meth:`drop` was called."""
        return self._dropped

    @property
    def black_holed(self) -> bool:
        """Whether a black hole is in effect now."""
        deadline = self._hole_deadline
        if deadline is None:
            return False
        if deadline != math.inf and trio.current_time() >= deadline:
            self._hole_deadline = None
            return False
        return True

    def drop(self) -> None:
        """Lose the connection abruptly, with no close frame and no goodbye.

        The peer sees the connection end at once: a TCP reset on sockets, end-of-file on
        memory streams. Calls on this side, pending or later, raise
        :exc:`trio.BrokenResourceError` (:exc:`trio.ClosedResourceError` after
        :meth:`aclose`). Idempotent; callable from synchronous code inside a Trio run.
        """
        if self._dropped:
            return
        self._dropped = True
        logger.info("fault: dropping connection")
        self._cancel_operations()
        self._notify_hole_change()
        if not self._inner_closed:
            self._inner_closed = True
            _close_now(self._inner)

    def black_hole(self, duration: float | None = None) -> None:
        """Swallow all traffic both ways for ``duration`` seconds (None: until dropped).

        Bytes sent are discarded; bytes received are read and discarded, so pings go
        unanswered and requests unseen; the peer's end-of-file stays hidden too. The
        connection itself stays up, and afterwards traffic flows again. A new call replaces
        the current hole.
        """
        if duration is None:
            self._hole_deadline = math.inf
        elif duration >= 0:
            self._hole_deadline = trio.current_time() + duration
        else:
            raise ValueError("duration must be >= 0 or None")
        logger.info("fault: black hole for %s s", "unlimited" if duration is None else duration)
        self._notify_hole_change()

    def end_black_hole(self) -> None:
        """End the current black hole now, if any."""
        self._hole_deadline = None
        self._notify_hole_change()

    def statistics(self) -> FaultStreamStatistics:
        """A snapshot of the stream's counters and fault state."""
        return FaultStreamStatistics(
            bytes_out=self._bytes_out,
            bytes_in=self._bytes_in,
            bytes_discarded_out=self._discarded_out,
            bytes_discarded_in=self._discarded_in,
            dropped=self._dropped,
            black_holed=self.black_holed,
            closed=self._closed,
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` through the link, or discard it inside a black hole."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._guarded(self._send_all, data)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Delegate to the inner stream (returns at once inside a black hole)."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            await self._guarded(self._wait_send_all_might_not_block)
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive the peer's next bytes; inside a black hole they are read and discarded."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            return await self._guarded(self._receive_some, max_bytes)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close the stream; inside a black hole the peer learns of it only when the hole ends.

        Idempotent.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._cancel_operations()
        if self._inner_closed:
            await trio.lowlevel.checkpoint()
            return
        if self.black_holed:
            # The peer's view of a black hole includes our goodbye: the FIN is lost too.
            trio.lowlevel.spawn_system_task(self._close_after_hole)
            await trio.lowlevel.checkpoint()
            return
        self._inner_closed = True
        await self._inner.aclose()

    def _failure(self) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError("this stream was closed")
        return trio.BrokenResourceError("the connection was dropped")

    def _cancel_operations(self) -> None:
        for scope in self._operations:
            scope.cancel()

    def _notify_hole_change(self) -> None:
        self._hole_changed.set()
        self._hole_changed = trio.Event()

    async def _wait_hole_over(self) -> None:
        while self.black_holed:
            changed = self._hole_changed
            deadline = self._hole_deadline
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await changed.wait()

    async def _guarded(self, operation: Callable[[*_Args], Awaitable[_T]], *args: *_Args) -> _T:
        if self._closed or self._dropped:
            await trio.lowlevel.checkpoint()
            raise self._failure()
        scope = trio.CancelScope()
        self._operations.add(scope)
        try:
            with scope:
                try:
                    return await operation(*args)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    if self._closed or self._dropped:
                        raise self._failure() from exc
                    raise
        finally:
            self._operations.discard(scope)
        # Only our own scope, cancelled by drop() or aclose(), gets here.
        raise self._failure()

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if not view:
            if self.black_holed:
                await trio.lowlevel.checkpoint()
            else:
                await self._inner.send_all(b"")
            return
        awaited = False
        offset = 0
        while offset < len(view):
            link = self.link
            end = len(view) if link is None else min(len(view), offset + link.chunk_size)
            piece = view[offset:end]
            offset = end
            if self.black_holed:
                self._discarded_out += len(piece)
                continue
            if link is not None:
                await link.consume(len(piece))
                awaited = True
                if self.black_holed:
                    self._discarded_out += len(piece)
                    continue
            await self._inner.send_all(piece)
            awaited = True
            self._bytes_out += len(piece)
        if not awaited:
            await trio.lowlevel.checkpoint()

    async def _wait_send_all_might_not_block(self) -> None:
        if self.black_holed:
            await trio.lowlevel.checkpoint()
        else:
            await self._inner.wait_send_all_might_not_block()

    async def _receive_some(self, max_bytes: int | None) -> bytes | bytearray:
        while True:
            data = await self._inner.receive_some(max_bytes)
            if not self.black_holed:
                self._bytes_in += len(data)
                return data
            if not data:
                # End-of-file is hidden like everything else until the hole ends.
                await self._wait_hole_over()
                return data
            self._discarded_in += len(data)

    async def _close_after_hole(self) -> None:
        try:
            await self._wait_hole_over()
        finally:
            if not self._inner_closed:
                self._inner_closed = True
                await _close_in_background(self._inner)


def _close_now(stream: trio.abc.AsyncResource) -> None:
    """Close ``stream`` without awaiting, so the peer notices at once."""
    if isinstance(stream, trio.SocketStream):
        # Linger 0 turns close() into a reset: the abrupt loss a crash or a cut cable causes.
        linger = struct.pack("hh" if sys.platform == "win32" else "ii", 1, 0)
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        stream.socket.close()
    elif isinstance(stream, trio.StapledStream):
        _close_now(stream.send_stream)
        _close_now(stream.receive_stream)
    elif isinstance(stream, trio.testing.MemorySendStream | trio.testing.MemoryReceiveStream):
        stream.close()
    elif isinstance(stream, trio.SSLStream):
        _close_now(stream.transport_stream)
    else:
        trio.lowlevel.spawn_system_task(_close_in_background, stream)


async def _close_in_background(stream: trio.abc.AsyncResource) -> None:
    try:
        await trio.aclose_forcefully(stream)
    except Exception:
        logger.debug("closing a dropped stream failed", exc_info=True)
