"""De-duplication of control events and notifications across reconnects (client.md §4, §5).

Pure: plain classes with no I/O; the managers feed them what arrives and act on the answers.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Hashable, Iterable
from typing import Final, final

import attrs

__all__ = [
    "MAX_SEQUENCE_JUMP",
    "NotificationDeduper",
    "NotificationDeduperStatistics",
    "Offer",
    "ReadinessTracker",
    "SequenceFilter",
    "Sequencing",
]


MAX_SEQUENCE_JUMP: Final = 1_000_000
"""How far past the high-water mark a ``seqId`` may jump (protocol.md §7); beyond it the
message is not trusted, since accepting it would make every later message a duplicate."""


@final
class Sequencing(enum.Enum):
    """What `SequenceFilter.check` makes of a ``seqId``."""

    NEW = "new"
    """Above the mark: hand the message over, then `SequenceFilter.commit` it."""
    DUPLICATE = "duplicate"
    """At or below the mark: already handed over; drop it."""
    IMPLAUSIBLE = "implausible"
    """More than `MAX_SEQUENCE_JUMP` past the mark: a protocol error; the mark stays."""


@final
class SequenceFilter:
    """Drops sequenced control messages already seen, by their ``seqId`` high-water mark.

    After a re-attach the server replays from the mark it was given, so anything at or
    below the mark is a duplicate. A ``seqId`` more than one above the mark is a jump
    (messages the server no longer kept); it is accepted and counted so it can be logged.

    Seen means handed over: `check` decides and moves nothing; the mark moves in
    `commit`, which the manager calls once the user's channel has taken the message (or
    at once for a message that is not handed to the user). A hand-over that is cancelled
    leaves the mark where it was, so the server replays the message after a re-attach.

    Attributes:
        high_water: Highest ``seqId`` committed so far (None: none yet); send it as
            ``last_sequence`` when re-attaching.
        duplicates: Messages refused as duplicates.
        implausible: Messages refused for jumping more than `MAX_SEQUENCE_JUMP`.
        jumps: Committed messages whose ``seqId`` skipped at least one number.
        last_jump: ``(expected, received)`` of the most recent jump, for the log.
    """

    def __init__(self, high_water: int | None = None) -> None:
        self.high_water = high_water
        self.duplicates = 0
        self.implausible = 0
        self.jumps = 0
        self.last_jump: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return (
            f"<SequenceFilter high_water={self.high_water} duplicates={self.duplicates} "
            f"jumps={self.jumps}>"
        )

    def check(self, seq_id: int | None) -> Sequencing:
        """What to do with a message carrying ``seq_id``; counts refusals, moves no mark.

        None (a message of a non-resumable session, or one that is not sequenced) is
        always `Sequencing.NEW` and its commit leaves the mark alone.
        """
        if seq_id is None:
            return Sequencing.NEW
        mark = 0 if self.high_water is None else self.high_water  # sequences start at 1
        if self.high_water is not None and seq_id <= mark:
            self.duplicates += 1
            return Sequencing.DUPLICATE
        if seq_id - mark > MAX_SEQUENCE_JUMP:
            self.implausible += 1
            return Sequencing.IMPLAUSIBLE
        return Sequencing.NEW

    def commit(self, seq_id: int | None) -> None:
        """The message with ``seq_id`` was handed over: raise the mark to it."""
        if seq_id is None or (self.high_water is not None and seq_id <= self.high_water):
            return
        # Sequences start at 1 (protocol.md §2), so a first seqId above 1 is a jump too.
        expected = 1 if self.high_water is None else self.high_water + 1
        if seq_id > expected:
            self.jumps += 1
            self.last_jump = (expected, seq_id)
        self.high_water = seq_id

    def accept(self, seq_id: int | None) -> bool:
        """`check` and, for a new message, `commit` at once; True if it was new.

        For messages that are not handed to anyone; an implausible one is refused.
        """
        if self.check(seq_id) is not Sequencing.NEW:
            return False
        self.commit(seq_id)
        return True


@final
class ReadinessTracker:
    """Delivers one ``readyForContinue`` per ``continue`` (client.md §4).

    Feed it every readiness-relevant control event that survived the `SequenceFilter`,
    in arrival order, and every ``continue``/``continueTo`` that went out. Control
    connections are numbered by the manager, increasing with each new connection.

    Deciding and recording are separate steps, because seen means handed over:
    `on_ready`, `on_paused` and `on_resumed` only decide whether a readiness event goes to
    the user; once the user's channel has taken it, the manager calls `handed_over`.
    Likewise `on_slot_or_completed` is called once the ``Slot``/``Completed`` was handed
    over. A hand-over that is cancelled therefore changes nothing here, and the event,
    replayed after a re-attach, is judged again.

    The rules of client.md §4 alone misjudge one case: a ready with no ``Slot`` since a
    continue that went out on an earlier connection, arriving in the *replay* of a
    re-attach, may be an old fresh ready the server sent before it ever received that
    continue (two drops close together, or a server that sends the fresh ready eagerly).
    A manager that also calls `on_attached` and `on_resumed` gets the exact answer: such
    a ready is held back until the replay is over, and delivered by `on_resumed` only if
    no ``Slot``/``Completed`` followed it (then the continue really was lost). A ready held
    back stays owed across connections until it is handed over or made moot. Without
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

        True after one was handed over and no ``continue``/``continueTo`` went out since;
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
        """A ``slotNotification`` or ``completed`` was handed over to the user."""
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
            True to hand a ``ReadyForContinue`` over now (then call `handed_over`): a
            ready held back during the replay had no ``Slot``/``Completed`` after it, so
            it answers a continue lost in a drop (and the server need not send another).
        """
        if self._replaying_on == connection_id:
            self._replaying_on = None
        # A ready is held back only while a continue is unanswered and nothing came since
        # (`on_ready`), and whatever answers or moots it clears the hold (`handed_over`,
        # `on_slot_or_completed`, `on_continue_sent`): one still held back is owed.
        return self._deferred

    def on_ready(self, current_connection_id: int) -> bool:
        """A ``readyForContinue`` arrived on ``current_connection_id``; True to deliver it.

        Delivered: the first one of the session; the answer to a ``continue`` after a
        ``Slot``/``Completed`` received since it; or, with nothing received since, when
        that ``continue`` went out on an earlier connection (lost in the drop). Dropped:
        any while the user already holds a ready, and the stale repeat a resume produces.
        During a replay (see `on_attached`) the last case is held back instead. After a
        True, call `handed_over` once the user's channel took the ready.
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
        return True

    def on_paused(self) -> bool:
        """A ``paused`` arrived; it always answers a ``continueTo``, so always True."""
        return True

    def handed_over(self) -> None:
        """A ``ReadyForContinue`` or ``Paused`` was handed over: the user holds it now."""
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
class Offer(enum.Enum):
    """What `NotificationDeduper.check` makes of a notification."""

    NEW = "new"
    """Not seen before: hand it over, then `NotificationDeduper.commit` it."""
    DUPLICATE = "duplicate"
    """Already handed over (a replay, or another address of the same call): drop it."""
    IMPLAUSIBLE = "implausible"
    """Its slot lies outside the session's range: a protocol error; nothing moves."""


@final
class NotificationDeduper:
    """Makes one ``subscribe_*`` call's notifications arrive exactly once (client.md §5).

    Each subscription (one per address) has a cursor: the highest slot up to which it has
    handed everything over (a notification of its own, a duplicate of one handed over
    before, or a `StreamGap` for what the server could no longer replay). On reconnect it
    is re-subscribed with ``replayFromSlot = cursor`` (inclusive, because the drop may
    have split that slot), so everything it can ever repeat has a slot >= its own cursor.
    Keys are therefore kept only for slots >= the lowest cursor of the call, which bounds
    memory to the replay span. While any subscription has no cursor (it saw nothing and
    no ``start_slot`` was given) nothing can be forgotten, so pass ``start_slot`` (or call
    `advance`) to bound memory from the start.

    Seen means handed over: `check` and `gap` decide and move nothing for what is to be
    handed over; `commit` and `commit_gap` record it once the user's channel took it. A
    hand-over that is cancelled leaves the cursor where it was, so the next connection's
    replay brings the notification (or the loss) again.

    Notifications within one subscription must be offered in arrival order; the
    subscriptions may interleave arbitrarily (one replaying while another is live).
    """

    def __init__(
        self,
        subscriptions: Iterable[Hashable],
        *,
        start_slot: int | None = None,
        end_slot: int | None = None,
    ) -> None:
        """Track ``subscriptions`` (duplicates ignored), each starting at ``start_slot``.

        Args:
            subscriptions: The call's subscription identities, e.g. its addresses.
            start_slot: The slot from which every subscription is complete when nothing
                has been received yet (e.g. the session's start slot); None if unknown.
                No notification can come from an earlier slot.
            end_slot: The session's last slot, if known; no notification can come from a
                later one.
        """
        self._cursors: dict[Hashable, int | None] = dict.fromkeys(subscriptions, start_slot)
        if not self._cursors:
            raise ValueError("a NotificationDeduper needs at least one subscription")
        self._start_slot = start_slot
        self._end_slot = end_slot
        self._seen: set[Hashable] = set()
        self._keys_at: dict[int, list[Hashable]] = {}
        self._slot_heap: list[int] = []
        self._floor: int | None = start_slot
        self.delivered = 0
        self.duplicates = 0
        self.implausible = 0
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
        return len(self._seen)

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

    def in_range(self, slot: int) -> bool:
        """Whether ``slot`` lies within the session's range (as far as it is known)."""
        return (self._start_slot is None or slot >= self._start_slot) and (
            self._end_slot is None or slot <= self._end_slot
        )

    def check(self, subscription: Hashable, slot: int, key: Hashable) -> Offer:
        """Judge a notification received on ``subscription``; moves nothing for a new one.

        A duplicate moves the subscription's cursor to ``slot`` at once (nothing is handed
        over for it). ``key`` identifies the notification across subscriptions: a
        signature, or ``(signature, account)``.
        """
        subscription = self._known(subscription)
        if not self.in_range(slot):
            self.implausible += 1
            return Offer.IMPLAUSIBLE
        if key in self._seen:
            self.duplicates += 1
            self._move_cursor(subscription, slot)
            return Offer.DUPLICATE
        return Offer.NEW

    def commit(self, subscription: Hashable, slot: int, key: Hashable) -> None:
        """The new notification ``key`` of ``subscription`` was handed over."""
        subscription = self._known(subscription)
        self._remember(key, slot)
        self.delivered += 1
        self._move_cursor(subscription, slot)

    def offer(self, subscription: Hashable, slot: int, key: Hashable) -> bool:
        """`check` and, for a new notification, `commit` at once; True if it was new."""
        if self.check(subscription, slot, key) is not Offer.NEW:
            return False
        self.commit(subscription, slot, key)
        return True

    def advance(self, subscription: Hashable, slot: int) -> None:
        """Declare ``subscription`` complete up to ``slot`` without a notification.

        For a subscription known to have missed nothing before ``slot`` (e.g. it was
        subscribed while the session stood at ``slot``); never moves a cursor back.
        """
        self._move_cursor(self._known(subscription), slot)

    def gap(self, subscription: Hashable, replay_from: int) -> tuple[int, int] | None:
        """What is lost if ``subscription``'s replay starts at ``replay_from``.

        The inclusive ``(from_slot, to_slot)`` whose notifications may be lost, or None
        when the cursor is already at or past ``replay_from``. ``from_slot`` is the
        cursor itself, since the drop may have cut that slot short. Moves nothing: call
        `commit_gap` once the `StreamGap` was handed over.

        Raises:
            ValueError: The subscription has no cursor and the deduper no ``start_slot``,
                so the start of the loss is unknown; or ``replay_from`` lies beyond the
                session's end slot.
        """
        subscription = self._known(subscription)
        start = self._cursors[subscription]
        if start is None:
            raise ValueError(
                f"subscription {subscription!r} has no cursor and the deduper no start_slot; "
                "the start of the gap is unknown"
            )
        if self._end_slot is not None and replay_from > self._end_slot:
            raise ValueError(
                f"a replay from slot {replay_from} lies beyond the session's end slot "
                f"{self._end_slot}"
            )
        if replay_from <= start:
            return None
        return (start, replay_from - 1)

    def commit_gap(self, subscription: Hashable, gap: tuple[int, int]) -> None:
        """The `StreamGap` for ``gap`` (from `gap`) was handed over: move past it."""
        self._move_cursor(self._known(subscription), gap[1] + 1)
        self.gaps += 1

    def _known(self, subscription: Hashable) -> Hashable:
        if subscription not in self._cursors:
            raise KeyError(f"unknown subscription {subscription!r}")
        return subscription

    def _remember(self, key: Hashable, slot: int) -> None:
        if self._floor is not None and slot < self._floor:
            # Every cursor is past this slot, so no subscription can repeat it.
            return
        self._seen.add(key)
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
                self._seen.remove(key)
