"""Connection status values, their one transition function, and the cell that holds one."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Final, TypeAlias, final

import attrs
import trio

from ._policy import DisconnectCause

__all__ = [
    "Closed",
    "Connecting",
    "ConnectionStatus",
    "Failed",
    "Parked",
    "Reconnecting",
    "StatusCell",
    "check_transition",
    "is_terminal",
]


@final
@attrs.frozen
class Connecting:
    """The first connection (and its handshake) is being made."""


@final
@attrs.frozen
class Up:
    """The connection is established and its handshake is complete."""


@final
@attrs.frozen
class Reconnecting:
    """The connection was lost; reconnect attempt ``attempt`` is under way.

    Attributes:
        attempt: Number of the attempt within the failure window (1-based).
        cause: Why the connection, or the previous attempt, ended.
    """

    attempt: int = attrs.field()
    cause: DisconnectCause

    @attempt.validator
    def _check_attempt(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value < 1:
            raise ValueError(f"Reconnecting.attempt starts at 1, got {value}")


@final
@attrs.frozen
class Parked:
    """A reconnect attempt waits at the `ReconnectCoordinator` until the link is free."""


@final
@attrs.frozen
class Failed:
    """The connection gave up for good (terminal).

    Attributes:
        reason: One readable line; never contains a secret.
    """

    reason: str


@final
@attrs.frozen
class Closed:
    """The connection was closed on purpose (terminal)."""


ConnectionStatus: TypeAlias = Connecting | Up | Reconnecting | Parked | Failed | Closed
"""The lifecycle of one managed connection."""

_CONNECTING: Final = Connecting()
_STATUS_TYPES: Final = (Connecting, Up, Reconnecting, Parked, Failed, Closed)

# The whole lifecycle. Reconnecting -> Reconnecting is the next attempt; Parked is
# entered only from an attempt in progress and leaves to that attempt or its outcome.
_ALLOWED: Final[dict[type[ConnectionStatus], frozenset[type[ConnectionStatus]]]] = {
    Connecting: frozenset({Up, Reconnecting, Failed, Closed}),
    Up: frozenset({Reconnecting, Failed, Closed}),
    Reconnecting: frozenset({Reconnecting, Parked, Up, Failed, Closed}),
    Parked: frozenset({Reconnecting, Up, Failed, Closed}),
    Failed: frozenset(),
    Closed: frozenset(),
}


def is_terminal(status: ConnectionStatus) -> bool:
    """Whether ``status`` is `Failed` or `Closed`, which nothing can follow."""
    return isinstance(status, Failed | Closed)


def check_transition(old: ConnectionStatus, new: ConnectionStatus) -> None:
    """Check that a connection may move from ``old`` to ``new``.

    Allowed: ``Connecting`` → ``Up``/``Reconnecting``/``Failed``/``Closed``;
    ``Up`` → ``Reconnecting``/``Failed``/``Closed``; ``Reconnecting`` →
    ``Reconnecting`` (next attempt)/``Parked``/``Up``/``Failed``/``Closed``;
    ``Parked`` → ``Reconnecting``/``Up``/``Failed``/``Closed``. ``Failed`` and
    ``Closed`` are terminal.

    Raises:
        ValueError: The move is not allowed.
        TypeError: ``new`` is not a `ConnectionStatus`.
    """
    if not isinstance(new, _STATUS_TYPES):
        raise TypeError(f"not a ConnectionStatus: {new!r}")
    if type(new) not in _ALLOWED[type(old)]:
        raise ValueError(f"illegal status transition {old!r} -> {new!r}")


@final
class StatusCell:
    """Holds one connection's current `ConnectionStatus` and wakes tasks waiting on it.

    The owning manager calls `set`; anyone may read `value` or wait. Must be used from
    one Trio run (waiting needs Trio).
    """

    _HISTORY: Final = 64

    def __init__(self, initial: ConnectionStatus = _CONNECTING) -> None:
        if not isinstance(initial, _STATUS_TYPES):
            raise TypeError(f"not a ConnectionStatus: {initial!r}")
        self._value: ConnectionStatus = initial
        self._changes = 0
        self._history: collections.deque[ConnectionStatus] = collections.deque(
            [initial], maxlen=self._HISTORY
        )
        self._changed = trio.Event()
        self._waiting_for_user = False
        self._user_changed = trio.Event()

    def __repr__(self) -> str:
        return f"<StatusCell {self._value!r} changes={self._changes}>"

    @property
    def waiting_for_user(self) -> bool:
        """Whether the connection's task is blocked handing an event to its user.

        During a reconnect's handshake such a connection counts as up for gating: the
        server already streams to it, and a continue that waited for it would wait for
        the user who is waiting in that continue.
        """
        return self._waiting_for_user

    def set_waiting_for_user(self, value: bool) -> None:
        """Record whether the task waits for its user; wakes `wait_user_changed`."""
        if value != self._waiting_for_user:
            self._waiting_for_user = value
            changed, self._user_changed = self._user_changed, trio.Event()
            changed.set()

    async def wait_user_changed(self, seen: bool) -> None:
        """Wait until `waiting_for_user` is no longer ``seen`` (at once if it is not)."""
        while self._waiting_for_user == seen:
            await self._user_changed.wait()
        await trio.lowlevel.checkpoint()

    @property
    def value(self) -> ConnectionStatus:
        """The current status."""
        return self._value

    @property
    def changes(self) -> int:
        """How many times `set` changed the status; pass it to `wait_changed`."""
        return self._changes

    @property
    def history(self) -> tuple[ConnectionStatus, ...]:
        """The initial status and every status set since, oldest first (the last 64)."""
        return tuple(self._history)

    def set(self, new: ConnectionStatus) -> None:
        """Move to ``new`` and wake every waiter.

        Raises:
            ValueError: `check_transition` refuses the move; the status is unchanged.
        """
        check_transition(self._value, new)
        self._value = new
        self._changes += 1
        self._history.append(new)
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def finish(self, new: Failed | Closed) -> bool:
        """Set the terminal ``new`` unless the status is terminal already; True if set.

        For ``finally`` blocks: an earlier ``Failed`` is kept rather than overwritten.
        """
        if is_terminal(self._value):
            return False
        self.set(new)
        return True

    async def wait_for(self, predicate: Callable[[ConnectionStatus], bool]) -> ConnectionStatus:
        """Wait until ``predicate(status)`` holds; return the status that satisfied it.

        Returns without blocking if it holds already (after a checkpoint, as every Trio
        operation). Cancellation leaves nothing behind.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        value = self._value
        if predicate(value):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return value
        while True:
            await self._changed.wait()
            value = self._value
            if predicate(value):
                return value

    async def wait_changed(self, seen: int) -> int:
        """Wait until `changes` exceeds ``seen``; return the new `changes`."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._changes > seen:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return self._changes
        while self._changes <= seen:
            await self._changed.wait()
        return self._changes
