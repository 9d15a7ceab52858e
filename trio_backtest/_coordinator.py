"""The reconnect coordinator: sessions on one link take turns to reconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import final

import attrs
import trio

__all__ = ["CoordinatorStatistics", "ReconnectCoordinator", "StreamingGuard"]


@final
@attrs.frozen
class CoordinatorStatistics:
    """A snapshot of a `ReconnectCoordinator`."""

    streaming: int
    """Connections counted as streaming (guards not yet released)."""
    parked: int
    """Tasks waiting for the reconnect slot right now."""
    parks: int
    """Times any task had to wait for the reconnect slot, in total."""
    max_parked: int
    """The most tasks ever waiting at once."""
    holder: bool
    """Whether a task holds the reconnect slot."""


@final
class StreamingGuard:
    """Counts one connection as streaming at its coordinator until `release`.

    Returned by `ReconnectCoordinator.enter`. Use it as a context manager, or call
    `release` in a ``finally``: a guard dropped without a release keeps the connection
    counted, and the coordinator's waiters wait for it forever.
    """

    __slots__ = ("_coordinator",)

    def __init__(self, coordinator: ReconnectCoordinator) -> None:
        self._coordinator: ReconnectCoordinator | None = coordinator

    @property
    def released(self) -> bool:
        """Whether `release` has run."""
        return self._coordinator is None

    def release(self) -> None:
        """Stop counting this connection as streaming; later calls do nothing."""
        coordinator, self._coordinator = self._coordinator, None
        if coordinator is not None:
            coordinator._leave()

    def __enter__(self) -> StreamingGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<StreamingGuard {'released' if self.released else 'streaming'}>"


@final
class ReconnectCoordinator:
    """Lets connections that share one link reconnect one at a time, and only when it is idle.

    A connection that streams holds a `StreamingGuard` from `enter`. A reconnect that
    must not compete with streaming traffic runs inside `reconnect_slot`, which waits
    until no connection streams and then admits one task at a time, in arrival order.

    The slot is handed to the longest waiter at the moment nothing streams and nobody
    holds it, so a waiter never waits while the link is idle and the slot is free. Its
    holder normally calls `enter` once connected and then leaves the slot; the next
    waiter is then admitted only when that connection, and every other, stops streaming.

    A task must not wait for the slot while it holds a guard or the slot itself: it
    would wait for itself. Holding the slot twice raises `RuntimeError`.
    """

    def __init__(self) -> None:
        self._streaming = 0
        self._holder: trio.lowlevel.Task | None = None
        self._lot = trio.lowlevel.ParkingLot()
        self._parks = 0
        self._max_parked = 0

    def enter(self) -> StreamingGuard:
        """Count one more connection as streaming until the returned guard is released."""
        self._streaming += 1
        return StreamingGuard(self)

    @asynccontextmanager
    async def reconnect_slot(self) -> AsyncIterator[None]:
        """Wait until no connection streams, then hold the single reconnect slot.

        Cancelled while waiting, the task leaves the queue without a trace; the slot is
        released when the block is left in any way, cancellation included.
        """
        task = trio.lowlevel.current_task()
        if self._holder is task:
            raise RuntimeError("this task already holds the reconnect slot")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._streaming == 0 and self._holder is None:
            self._holder = task
            admitted_at_once = True
        else:
            self._parks += 1
            self._max_parked = max(self._max_parked, len(self._lot) + 1)
            # `_admit_next` makes this task the holder before it wakes it up, so no one
            # can slip in between; a cancelled park never became the holder.
            await self._lot.park()
            admitted_at_once = False
        try:
            if admitted_at_once:
                await trio.lowlevel.cancel_shielded_checkpoint()
            yield
        finally:
            self._holder = None
            self._admit_next()

    def statistics(self) -> CoordinatorStatistics:
        """Return a snapshot of the streaming count and the queue for the slot."""
        return CoordinatorStatistics(
            streaming=self._streaming,
            parked=len(self._lot),
            parks=self._parks,
            max_parked=self._max_parked,
            holder=self._holder is not None,
        )

    def _leave(self) -> None:
        self._streaming -= 1
        self._admit_next()

    def _admit_next(self) -> None:
        if self._streaming == 0 and self._holder is None:
            for task in self._lot.unpark(count=1):
                self._holder = task

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<ReconnectCoordinator streaming={stats.streaming} parked={stats.parked}"
            f" holder={stats.holder}>"
        )
