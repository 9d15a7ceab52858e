"""De-duplication of control events and notifications across reconnects (client.md §4, §5).

Pure: plain classes with no I/O; the managers feed them what arrives and act on the answers.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable
from typing import final

import attrs

__all__ = [
    "NotificationDeduper",
    "NotificationDeduperStatistics",
    "ReadinessTracker",
    "SequenceFilter",
]


@final
class SequenceFilter:
    """Drops sequenced control messages already seen, by their ``seqId`` high-water mark.

    After a re-attach the server replays from the mark it was given, so anything at or
    below the mark is a duplicate. A ``seqId`` more than one above the mark is a jump
    (messages the server no longer kept); it is accepted and counted so it can be logged.

    Attributes:
        high_water: Highest ``seqId`` accepted so far (None: none yet); send it as
            ``last_sequence`` when re-attaching.
        duplicates: Messages refused as duplicates.
        jumps: Accepted messages whose ``seqId`` skipped at least one number.
        last_jump: ``(expected, received)`` of the most recent jump, for the log.
    """

    def __init__(self, high_water: int | None = None) -> None:
        self.high_water = high_water
        self.duplicates = 0
        self.jumps = 0
        self.last_jump: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"<SequenceFilter high_water={self.high_water} duplicates={self.duplicates} "
            f"jumps={self.jumps}>"
        )

    def accept(self, seq_id: int | None) -> bool:
        """Whether to deliver a message with ``seq_id``; advances the mark if so.

        None (a message of a non-resumable session, or one that is not sequenced) is
        always accepted and leaves the mark alone.
        """
        if seq_id is None:
            return True
        if self.high_water is not None and seq_id <= self.high_water:
            self.duplicates += 1
            return False
        # Sequences start at 1 (protocol.md §2), so a first seqId above 1 is a jump too.
        expected = 1 if self.high_water is None else self.high_water + 1
        if seq_id > expected:
            self.jumps += 1
            self.last_jump = (expected, seq_id)
        self.high_water = seq_id
        return True


@final
class ReadinessTracker:
    """Delivers one ``readyForContinue`` per ``continue`` (client.md §4).

    Feed it every readiness-relevant control event that survived the `SequenceFilter`,
    in arrival order, and every ``continue``/``continueTo`` that went out. Control
    connections are numbered by the manager, increasing with each new connection.

    The rules of client.md §4 alone misjudge one case: a ready with no ``Slot`` since a
    continue that went out on an earlier connection, arriving in the *replay* of a
    re-attach, may be an old fresh ready the server sent before it ever received that
    continue (two drops close together, or a server that sends the fresh ready eagerly).
    A manager that also calls `on_attached` and `on_resumed` gets the exact answer: such
    a ready is held back until the replay is over, and delivered by `on_resumed` only if
    no ``Slot``/``Completed`` followed it (then the continue really was lost). Without
    those two calls the tracker follows client.md §4 literally.

    Attributes:
        dropped: ``readyForContinue`` messages not delivered (duplicates and stale ones).
    """

    def __init__(self) -> None:
        self._holding = False
        self._continue_connection: int | None = None
        self._progress = False
        self._replaying_on: int | None = None
        self._deferred = False
        self.dropped = 0

    def __repr__(self) -> str:
        return (
            f"<ReadinessTracker ready={self._holding} "
            f"continue_connection={self._continue_connection} progress={self._progress}>"
        )

    @property
    def ready(self) -> bool:
        """Whether the user holds an unanswered ``ReadyForContinue`` or ``Paused``.

        True after one was delivered and no ``continue``/``continueTo`` went out since;
        this is what ``send_continue`` checks before sending anything.
        """
        return self._holding

    @property
    def awaiting_answer(self) -> bool:
        """Whether a ``continue``/``continueTo`` went out and its answer has not come."""
        return self._continue_connection is not None

    def on_continue_sent(self, connection_id: int) -> None:
        """A ``continue``/``continueTo`` went out on control connection ``connection_id``."""
        self._holding = False
        self._continue_connection = connection_id
        self._progress = False
        self._deferred = False

    def on_slot_or_completed(self) -> None:
        """A ``slotNotification`` or ``completed`` was received."""
        self._progress = True
        if self._deferred:
            # The continue reached the server, so the ready held back was not its answer.
            self._deferred = False
            self.dropped += 1

    def on_attached(self, connection_id: int) -> None:
        """``sessionAttached`` arrived on ``connection_id``: the replay begins."""
        self._replaying_on = connection_id

    def on_resumed(self, connection_id: int) -> bool:
        """The resume on ``connection_id`` succeeded: the replay is over.

        Returns:
            True to deliver a ``ReadyForContinue`` now: a ready held back during the
            replay had no ``Slot``/``Completed`` after it, so it answers a continue lost
            in a drop (and the server need not send another).
        """
        if self._replaying_on == connection_id:
            self._replaying_on = None
        if not self._deferred:
            return False
        self._deferred = False
        if self._holding or self._progress or self._continue_connection is None:
            self.dropped += 1
            return False
        self._deliver()
        return True

    def on_ready(self, current_connection_id: int) -> bool:
        """A ``readyForContinue`` arrived on ``current_connection_id``; True to deliver it.

        Delivered: the first one of the session; the answer to a ``continue`` after a
        ``Slot``/``Completed`` received since it; or, with nothing received since, when
        that ``continue`` went out on an earlier connection (lost in the drop). Dropped:
        any while the user already holds a ready, and the stale repeat a resume produces.
        During a replay (see `on_attached`) the last case is held back instead.
        """
        if self._holding:
            self.dropped += 1
            return False
        if self._continue_connection is not None and not self._progress:
            if self._replaying_on == current_connection_id:
                self._deferred = True
                return False
            if self._continue_connection >= current_connection_id:
                self.dropped += 1
                return False
        self._deliver()
        return True

    def on_paused(self) -> bool:
        """A ``paused`` arrived; it always answers a ``continueTo``, so always True."""
        self._deliver()
        return True

    def _deliver(self) -> None:
        self._holding = True
        self._continue_connection = None
        self._deferred = False


@final
@attrs.frozen
class NotificationDeduperStatistics:
    """Snapshot of a `NotificationDeduper`'s counters.

    Attributes:
        delivered: Notifications accepted as new.
        duplicates: Notifications dropped as already delivered.
        keys_held: Keys currently remembered.
        gaps: Replay-window gaps reported by `NotificationDeduper.gap`.
    """

    delivered: int
    duplicates: int
    keys_held: int
    gaps: int


@final
class NotificationDeduper:
    """Makes one ``subscribe_*`` call's notifications arrive exactly once (client.md §5).

    Each subscription (one per address) has a cursor: the highest slot it has received a
    notification for, delivered or not. On reconnect it is re-subscribed with
    ``replayFromSlot = cursor`` (inclusive, because the drop may have split that slot),
    so everything it can ever repeat has a slot >= its own cursor. Keys are therefore kept
    only for slots >= the lowest cursor of the call, which bounds memory to the replay
    span. While any subscription has no cursor (it saw nothing and no ``start_slot`` was
    given) nothing can be forgotten, so pass ``start_slot`` (or call `advance`) to bound
    memory from the start.

    Notifications within one subscription must be offered in arrival order; the
    subscriptions may interleave arbitrarily (one replaying while another is live).
    """

    def __init__(self, subscriptions: Iterable[Hashable], *, start_slot: int | None = None) -> None:
        """Track ``subscriptions`` (duplicates ignored), each starting at ``start_slot``.

        Args:
            subscriptions: The call's subscription identities, e.g. its addresses.
            start_slot: The slot from which every subscription is complete when nothing
                has been received yet (e.g. the session's start slot); None if unknown.
        """
        self._cursors: dict[Hashable, int | None] = dict.fromkeys(subscriptions, start_slot)
        if not self._cursors:
            raise ValueError("a NotificationDeduper needs at least one subscription")
        self._start_slot = start_slot
        self._slot_of: dict[Hashable, int] = {}
        self._keys_at: dict[int, list[Hashable]] = {}
        self._slot_heap: list[int] = []
        self._floor: int | None = start_slot
        self.delivered = 0
        self.duplicates = 0
        self.gaps = 0

    def __repr__(self) -> str:
        return (
            f"<NotificationDeduper subscriptions={len(self._cursors)} floor={self._floor} "
            f"keys_held={self.keys_held} duplicates={self.duplicates}>"
        )

    @property
    def subscriptions(self) -> tuple[Hashable, ...]:
        """The tracked subscriptions, in the order given."""
        return tuple(self._cursors)

    @property
    def keys_held(self) -> int:
        """Number of keys currently remembered."""
        return len(self._slot_of)

    @property
    def floor(self) -> int | None:
        """The lowest cursor; keys of lower slots are forgotten (None: keep everything)."""
        return self._floor

    def statistics(self) -> NotificationDeduperStatistics:
        """Return a snapshot of the counters."""
        return NotificationDeduperStatistics(
            delivered=self.delivered,
            duplicates=self.duplicates,
            keys_held=self.keys_held,
            gaps=self.gaps,
        )

    def cursor(self, subscription: Hashable) -> int | None:
        """The ``replayFromSlot`` (inclusive) for re-subscribing; None if nothing is known."""
        return self._cursors[self._known(subscription)]

    def offer(self, subscription: Hashable, slot: int, key: Hashable) -> bool:
        """Register a notification received on ``subscription``; True if it is new.

        The subscription's cursor moves to ``slot`` either way. ``key`` identifies the
        notification across subscriptions: a signature, or ``(signature, account)``.
        """
        subscription = self._known(subscription)
        if key in self._slot_of:
            self.duplicates += 1
            new = False
        else:
            self._remember(key, slot)
            self.delivered += 1
            new = True
        self._move_cursor(subscription, slot)
        return new

    def advance(self, subscription: Hashable, slot: int) -> None:
        """Declare ``subscription`` complete up to ``slot`` without a notification.

        For a subscription known to have missed nothing before ``slot`` (e.g. it was
        subscribed while the session stood at ``slot``); never moves a cursor back.
        """
        self._move_cursor(self._known(subscription), slot)

    def gap(self, subscription: Hashable, oldest_slot: int) -> tuple[int, int] | None:
        """The server can replay ``subscription`` only from ``oldest_slot`` on.

        Moves the cursor to ``oldest_slot`` (re-subscribe from there) and returns the
        inclusive ``(from_slot, to_slot)`` whose notifications may be lost, or None when
        the cursor is already at or past ``oldest_slot``. ``from_slot`` is the cursor
        itself, since the drop may have cut that slot short.

        Raises:
            ValueError: The subscription has no cursor and no ``start_slot`` was given,
                so the start of the loss is unknown.
        """
        subscription = self._known(subscription)
        start = self._cursors[subscription]
        if start is None:
            raise ValueError(
                f"subscription {subscription!r} has no cursor and the deduper no start_slot; "
                "the start of the gap is unknown"
            )
        if oldest_slot <= start:
            return None
        self._move_cursor(subscription, oldest_slot)
        self.gaps += 1
        return (start, oldest_slot - 1)

    def _known(self, subscription: Hashable) -> Hashable:
        if subscription not in self._cursors:
            raise KeyError(f"unknown subscription {subscription!r}")
        return subscription

    def _remember(self, key: Hashable, slot: int) -> None:
        if self._floor is not None and slot < self._floor:
            # Every cursor is past this slot, so no subscription can repeat it.
            return
        self._slot_of[key] = slot
        keys = self._keys_at.get(slot)
        if keys is None:
            self._keys_at[slot] = [key]
            heapq.heappush(self._slot_heap, slot)
        else:
            keys.append(key)

    def _move_cursor(self, subscription: Hashable, slot: int) -> None:
        current = self._cursors[subscription]
        if current is not None and slot <= current:
            return
        # The floor only moves if this subscription held it (or had no cursor).
        was_floor = current is None or current == self._floor
        self._cursors[subscription] = slot
        if was_floor:
            self._prune()

    def _prune(self) -> None:
        cursors = self._cursors.values()
        if any(c is None for c in cursors):
            return
        floor = min(c for c in cursors if c is not None)
        self._floor = floor
        heap = self._slot_heap
        while heap and heap[0] < floor:
            for key in self._keys_at.pop(heapq.heappop(heap)):
                del self._slot_of[key]
