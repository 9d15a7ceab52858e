"""What managers send the session besides events, and the counters they keep."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, final

import attrs
import trio

from ._status import StatusCell

__all__ = [
    "Completion",
    "Counters",
    "Drained",
    "Ended",
    "hand_over",
    "hand_over_nowait",
    "unwrap_single",
]


@final
@attrs.frozen
class Ended:
    """A manager stopped: ``error`` is what the user should see (``None``: a clean end)."""

    source: str
    error: BaseException | None


@final
@attrs.frozen
class Drained:
    """A subscription manager delivered everything up to the session's end."""

    source: str


@final
@attrs.define
class Counters:
    """Mutable per-manager counters; snapshots go into ``statistics()``."""

    reconnects: int = 0
    duplicates: int = 0
    unknown_messages: int = 0
    protocol_errors: int = 0
    messages: int = 0
    bytes: int = 0
    gaps: int = 0
    parked_seconds: float = 0.0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found


@contextmanager
def unwrap_single() -> Iterator[None]:
    """Re-raise an exception group that holds exactly one exception as that exception.

    Trio's strict exception groups wrap even a lone error; at our boundaries a single
    error should come out as itself (client.md §1).
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


def hand_over_nowait(sink: trio.MemorySendChannel[Any], item: object) -> bool | None:
    """Put ``item`` in the user's channel if it has room: True if taken, False if nobody
    reads any more, None if the channel is full (nothing was delivered)."""
    try:
        sink.send_nowait(item)
    except trio.WouldBlock:
        return None
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


async def hand_over(sink: trio.MemorySendChannel[Any], item: object, cell: StatusCell) -> bool:
    """Put ``item`` in the user's channel; False if nobody reads any more.

    Either the channel takes ``item`` and this returns, or it raises without delivering
    it: the caller commits what it handed over only after this returned True. While the
    channel is full, ``cell`` says the task waits for its user.
    """
    taken = hand_over_nowait(sink, item)
    if taken is not None:
        return taken
    cell.set_waiting_for_user(True)
    try:
        await sink.send(item)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    finally:
        cell.set_waiting_for_user(False)
    return True


@final
class Completion:
    """The session's ``Completed`` has arrived: an event that also calls listeners at once.

    A subscription manager waiting for a frame must learn of the completion while it
    waits (the drain's bound starts then); a listener does that without a task per
    connection that would do nothing but wait for this.
    """

    __slots__ = ("_event", "_listeners")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._listeners: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"<Completion set={self._event.is_set()}>"

    def is_set(self) -> bool:
        """Whether the session has completed."""
        return self._event.is_set()

    def set(self) -> None:
        """The session has completed: wake the waiters and call each listener once."""
        if self._event.is_set():
            return
        self._event.set()
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener()

    async def wait(self) -> None:
        """Wait until the session has completed."""
        await self._event.wait()

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` when the session completes; return a function that stops it."""
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return stop
