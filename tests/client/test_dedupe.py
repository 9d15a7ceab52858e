from __future__ import annotations

import bisect
import collections
from collections.abc import Hashable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_backtest._dedupe import (
    MAX_SEQUENCE_JUMP,
    NotificationDeduper,
    NotificationDeduperStatistics,
    Offer,
    ReadinessTracker,
    SequenceFilter,
    Sequencing,
)

# SequenceFilter ------------------------------------------------------------------------


def test_sequence_filter_in_order() -> None:
    f = SequenceFilter()
    assert (f.high_water, f.last_jump) == (None, None)
    assert [f.accept(n) for n in (1, 2, 3)] == [True, True, True]
    assert f.high_water == 3
    assert (f.duplicates, f.jumps) == (0, 0)


def test_sequence_filter_drops_replayed_duplicates() -> None:
    f = SequenceFilter(high_water=5)
    assert [f.accept(n) for n in (4, 5, 6, 6, 7)] == [False, False, True, False, True]
    assert f.duplicates == 3
    assert f.high_water == 7


def test_sequence_filter_counts_jumps() -> None:
    f = SequenceFilter()
    assert f.accept(3)
    assert f.last_jump == (1, 3)
    assert f.accept(4)
    assert f.accept(10)
    assert f.jumps == 2
    assert f.last_jump == (5, 10)
    assert f.high_water == 10


def test_sequence_filter_unsequenced_always_pass() -> None:
    f = SequenceFilter(high_water=9)
    assert f.accept(None)
    assert f.accept(None)
    assert f.high_water == 9
    assert f.duplicates == 0
    assert repr(f) == "<SequenceFilter high_water=9 duplicates=0 jumps=0>"


@given(st.lists(st.integers(1, 30)))
def test_sequence_filter_accepts_a_strictly_increasing_subsequence(seqs: list[int]) -> None:
    f = SequenceFilter()
    accepted = [n for n in seqs if f.accept(n)]
    assert accepted == sorted(set(accepted))
    # Everything accepted is exactly the running maxima.
    running: list[int] = []
    for n in seqs:
        if not running or n > running[-1]:
            running.append(n)
    assert accepted == running
    assert f.duplicates == len(seqs) - len(accepted)


def test_sequence_filter_moves_the_mark_only_on_commit() -> None:
    f = SequenceFilter(high_water=4)
    assert f.check(5) is Sequencing.NEW
    assert f.high_water == 4  # decided, not yet handed over
    # The hand-over was cancelled: the same message comes again in the replay.
    assert f.check(5) is Sequencing.NEW
    f.commit(5)
    assert f.high_water == 5
    assert f.check(5) is Sequencing.DUPLICATE
    assert (f.duplicates, f.jumps) == (1, 0)
    f.commit(3)  # never moves back
    assert f.high_water == 5


def test_sequence_filter_refuses_a_jump_beyond_a_million() -> None:
    # protocol.md §7: more than 1,000,000 past the mark is not trusted; the mark stays.
    assert MAX_SEQUENCE_JUMP == 1_000_000
    f = SequenceFilter(high_water=10)
    assert f.check(1_000_011) is Sequencing.IMPLAUSIBLE
    assert not f.accept(1_000_011)
    assert f.high_water == 10
    assert f.implausible == 2
    assert f.check(1_000_010) is Sequencing.NEW  # exactly a million past the mark
    # Before any message the mark counts as 0 (sequences start at 1).
    fresh = SequenceFilter()
    assert fresh.check(1_000_000) is Sequencing.NEW
    assert fresh.check(1_000_001) is Sequencing.IMPLAUSIBLE
    assert fresh.high_water is None


# ReadinessTracker ----------------------------------------------------------------------


def test_first_ready_is_delivered_and_repeats_are_dropped() -> None:
    t = ReadinessTracker()
    assert (t.ready, t.awaiting_answer) == (False, False)
    assert t.on_ready(1)
    assert not t.ready  # decided; the user holds it once it was handed over
    t.handed_over()
    assert t.ready
    assert not t.on_ready(1)
    assert not t.on_ready(2)
    assert t.ready
    assert t.dropped == 2


def test_ready_after_slot_answers_the_continue() -> None:
    t = ReadinessTracker()
    t.on_ready(1)
    t.on_continue_sent(1)
    assert not t.ready
    assert t.awaiting_answer
    t.on_slot_or_completed()
    assert t.on_ready(1)
    t.handed_over()
    assert t.ready
    assert not t.awaiting_answer


def test_a_ready_whose_hand_over_was_cancelled_is_judged_again() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    t.on_slot_or_completed()
    assert t.on_ready(1)
    # Cancelled before the user's channel took it: nothing recorded, so its replay on
    # the next connection is judged again — still the answer, after the Slot.
    assert not t.ready
    t.on_attached(2)
    assert t.on_ready(2)
    t.handed_over()
    assert t.ready
    assert t.dropped == 0


def test_a_ready_owed_at_a_resume_stays_owed_until_handed_over() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    t.on_attached(2)
    assert not t.on_ready(2)  # held back during the replay
    assert t.on_resumed(2)  # owed: hand it over ...
    # ... but the hand-over is cancelled: the next resume still owes it.
    t.on_attached(3)
    assert t.on_resumed(3)
    t.handed_over()
    assert t.ready
    assert not t.on_ready(3)  # the server's fresh ready is now a duplicate
    assert t.dropped == 1


def test_ready_without_progress_on_same_connection_is_stale() -> None:
    t = ReadinessTracker()
    t.handed_over()
    assert not t.on_ready(1)  # a duplicate while the user holds one
    t.on_continue_sent(2)
    assert repr(t) == "<ReadinessTracker ready=False continue_connection=2 progress=False>"
    # e.g. the fresh ready a resume sent just before the continue went out.
    assert not t.on_ready(2)
    assert not t.on_ready(1)  # or one replayed from before: stale too
    assert (t.ready, t.dropped) == (False, 3)
    t.on_slot_or_completed()
    assert t.on_ready(2)
    assert t.dropped == 3


def test_continue_lost_in_a_drop_is_answered_by_the_fresh_ready() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    assert t.on_ready(2)
    t.handed_over()
    assert t.ready


def test_progress_from_before_the_continue_does_not_count() -> None:
    t = ReadinessTracker()
    t.on_slot_or_completed()
    t.handed_over()
    t.on_slot_or_completed()
    t.on_continue_sent(1)
    assert not t.on_ready(1)


def test_completed_counts_as_progress() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    t.on_slot_or_completed()
    assert t.on_ready(1)


def test_paused_is_always_delivered() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    assert t.on_paused()
    t.handed_over()
    assert t.ready
    assert not t.on_ready(1)
    # A continue from Paused, lost in a drop, is answered by the next fresh ready.
    t.on_continue_sent(1)
    assert t.on_ready(2)
    t.handed_over()
    assert t.on_paused()


def test_readiness_repr() -> None:
    assert repr(ReadinessTracker()) == (
        "<ReadinessTracker ready=False continue_connection=None progress=False>"
    )


def test_replay_hooks_before_any_ready_change_nothing() -> None:
    t = ReadinessTracker()
    t.on_attached(1)
    assert t.on_resumed(1) is False
    t.on_slot_or_completed()
    assert t.dropped == 0
    assert t.on_ready(1)


def test_replay_hooks_hold_back_a_stale_fresh_ready() -> None:
    # The client holds a ready; a drop; the resume on connection 2 sends a fresh ready F
    # that is still in flight when the user's continue goes out on connection 2. The server
    # executes the continue (Completed), and the socket drops before F or Completed arrive.
    # Connection 3 replays F, then Completed.
    literal = ReadinessTracker()
    assert literal.on_ready(1)
    literal.handed_over()
    literal.on_continue_sent(2)
    hooked = ReadinessTracker()
    assert hooked.on_ready(1)
    hooked.handed_over()
    assert not hooked.on_ready(1)  # a duplicate, dropped
    hooked.on_attached(2)
    assert hooked.on_resumed(2) is False
    hooked.on_continue_sent(2)
    hooked.on_attached(3)
    # client.md §4 read literally takes F for the answer of a continue lost in the drop.
    assert literal.on_ready(3)
    # With the hooks, F is held back, and Completed shows the continue was not lost.
    assert not hooked.on_ready(3)
    hooked.on_slot_or_completed()
    assert hooked.on_resumed(3) is False
    assert not hooked.ready
    assert hooked.dropped == 2  # the duplicate, then F


def test_replay_hooks_deliver_a_held_back_ready_at_resume() -> None:
    # A continue on connection 2 is lost; the fresh ready of connection 3's resume is lost
    # with connection 3; connection 4 replays it and the server sends no other.
    t = ReadinessTracker()
    assert t.on_ready(1)
    t.handed_over()
    t.on_continue_sent(2)
    t.on_attached(4)
    assert not t.on_ready(4)
    assert not t.ready
    assert t.on_resumed(4)
    t.handed_over()
    assert t.ready
    # An eager server's extra fresh ready after the resume is a duplicate.
    assert not t.on_ready(4)
    assert t.dropped == 1


def test_replay_hooks_deliver_answers_during_replay() -> None:
    t = ReadinessTracker()
    t.handed_over()
    t.on_continue_sent(1)
    t.on_attached(2)
    t.on_slot_or_completed()
    assert t.on_ready(2)
    t.handed_over()
    assert t.on_resumed(2) is False
    assert t.ready


def test_a_continue_lost_in_a_drop_owes_nothing_at_the_resume() -> None:
    # Nothing was held back during the replay, so the server's fresh ready is the answer.
    t = ReadinessTracker()
    assert t.on_ready(1)
    t.handed_over()
    t.on_continue_sent(1)
    t.on_attached(2)
    assert t.on_resumed(2) is False
    assert t.on_ready(2)
    assert t.dropped == 0


@attrs.define
class ControlSim:
    """A resumable session (protocol.md §3, §3.1) and a client, joined by a lossy link.

    The server is atomic: it answers a continue completely the moment it receives it.
    The client sends ``resumeAttachedSession`` right after attaching; the server answers
    it (``success``, then perhaps a fresh ready) after the replay. The client continues
    only while its control connection is ``Up`` (after the resume's ``success``).
    """

    end: int
    eager_fresh_ready: bool
    hooks: bool
    position: int = 0
    seq: int = 0
    log: list[tuple[int, str]] = attrs.Factory(list)
    awaiting: bool = False
    completed: bool = False
    last_ready_seq: int = 0
    attach_high: int = 0
    to_client: collections.deque[tuple[int | None, str]] = attrs.Factory(collections.deque)
    to_server: collections.deque[tuple[str, int]] = attrs.Factory(collections.deque)
    connection: int = 1
    up: bool = True
    filt: SequenceFilter = attrs.Factory(SequenceFilter)
    tracker: ReadinessTracker = attrs.Factory(ReadinessTracker)
    seen: list[str] = attrs.Factory(list)
    slots: list[int] = attrs.Factory(list)
    violations: list[str] = attrs.Factory(list)

    def emit(self, kind: str) -> None:
        self.seq += 1
        self.log.append((self.seq, kind))
        self.to_client.append((self.seq, kind))
        if kind == "ready":
            self.last_ready_seq = self.seq
        if kind in ("ready", "paused"):
            self.awaiting = True

    def create(self) -> None:
        self.emit("slot:0")
        self.emit("ready")

    def server_receive(self) -> None:
        kind, count = self.to_server.popleft()
        if kind == "resume":
            self.to_client.append((None, "resumed"))
            replay_had_ready = self.last_ready_seq > self.attach_high
            if self.awaiting and (self.eager_fresh_ready or not replay_had_ready):
                self.emit("ready")
            return
        if not self.awaiting:
            self.violations.append(f"{kind} received while not ready")
            return
        self.awaiting = False
        if kind == "continueTo":
            self.emit("paused")
            return
        for _ in range(count):
            if self.position == self.end:
                self.completed = True
                self.emit("completed")
                return
            self.position += 1
            self.emit(f"slot:{self.position}")
        self.emit("ready")

    def client_receive(self, cut: bool = False) -> bool:
        """Take the next message; with ``cut``, a hand-over to the user is cancelled.

        Returns whether a hand-over was cut off (the connection then dies, as when a
        sibling task's failure cancels the reader). Seen means handed over: a cut-off
        event records nothing.
        """
        seq, kind = self.to_client.popleft()
        if kind == "resumed":
            self.up = True
            if self.hooks and self.tracker.on_resumed(self.connection):
                if cut:
                    return True
                self.seen.append("ready")
                self.tracker.handed_over()
            return False
        if self.filt.check(seq) is not Sequencing.NEW:
            return False
        if kind == "ready":
            deliver = self.tracker.on_ready(self.connection)
        elif kind == "paused":
            deliver = self.tracker.on_paused()
        else:
            deliver = True
        if not deliver:
            self.filt.commit(seq)
            return False
        if cut:
            return True
        self.filt.commit(seq)
        if kind.startswith("slot:") or kind == "completed":
            self.tracker.on_slot_or_completed()
            self.seen.append(kind)
            if kind != "completed":
                self.slots.append(int(kind[5:]))
        else:
            self.tracker.handed_over()
            self.seen.append("ready")
        return False

    def may_continue(self) -> bool:
        return self.up and self.tracker.ready and "completed" not in self.seen

    def client_continue(self, kind: str, count: int) -> None:
        self.tracker.on_continue_sent(self.connection)
        self.to_server.append((kind, count))
        self.seen.append("continue")

    def drop_and_attach(self) -> None:
        self.to_client.clear()
        self.to_server.clear()
        self.connection += 1
        self.up = False
        self.attach_high = self.filt.high_water or 0
        if self.hooks:
            self.tracker.on_attached(self.connection)
        for seq, kind in self.log:
            if seq > self.attach_high:
                self.to_client.append((seq, kind))
        self.to_server.append(("resume", 0))


def run_control_sim(data: st.DataObject, sim: ControlSim, max_drops: int) -> None:
    sim.create()
    drops = 0
    for _ in range(60):
        actions = []
        if sim.to_client:
            actions += ["to_client"] * 3
            if drops < max_drops:
                actions.append("cut")
        if sim.to_server:
            actions += ["to_server"] * 2
        if sim.may_continue():
            actions += ["continue", "continueTo"]
        if drops < max_drops:
            actions.append("drop")
        if not actions:
            break
        action = data.draw(st.sampled_from(actions))
        if action == "to_client":
            sim.client_receive()
        elif action == "cut":
            if sim.client_receive(cut=True):
                drops += 1
                sim.drop_and_attach()
        elif action == "to_server":
            sim.server_receive()
        elif action == "drop":
            drops += 1
            sim.drop_and_attach()
        else:
            sim.client_continue(action, data.draw(st.integers(1, 3)))
    # Settle without further drops or continues.
    while sim.to_client or sim.to_server:
        if sim.to_server:
            sim.server_receive()
        else:
            sim.client_receive()

    assert sim.violations == []
    readiness = [e for e in sim.seen if e in ("ready", "continue")]
    # One readiness event per continue: ready, continue, ready, continue, ...
    assert readiness == ["ready", "continue"] * (len(readiness) // 2) + ["ready"] * (
        len(readiness) % 2
    )
    assert sim.slots == list(range(len(sim.slots)))
    if sim.completed:
        assert sim.seen.count("completed") == 1
        assert not sim.tracker.ready
    else:
        # Nobody waits forever: the server waits for a continue exactly when the user may
        # send one.
        assert sim.tracker.ready == sim.awaiting


@settings(max_examples=200, deadline=None)
@given(data=st.data(), end=st.integers(0, 6), eager=st.booleans())
def test_readiness_with_replay_hooks_survives_any_drops(
    data: st.DataObject, end: int, eager: bool
) -> None:
    run_control_sim(data, ControlSim(end=end, eager_fresh_ready=eager, hooks=True), max_drops=4)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), end=st.integers(0, 6), eager=st.booleans())
def test_readiness_literal_rules_survive_one_drop(
    data: st.DataObject, end: int, eager: bool
) -> None:
    run_control_sim(data, ControlSim(end=end, eager_fresh_ready=eager, hooks=False), max_drops=1)


# NotificationDeduper -------------------------------------------------------------------


def test_deduper_basic() -> None:
    d = NotificationDeduper(["a", "b"])
    assert d.subscriptions == ("a", "b")
    assert d.cursor("a") is None
    assert d.offer("a", 10, "sig1")
    assert d.offer("b", 10, "sig2")
    assert not d.offer("b", 10, "sig1")  # same transaction, second address of the call
    assert d.cursor("a") == 10
    assert d.cursor("b") == 10
    assert d.statistics() == NotificationDeduperStatistics(
        delivered=2, duplicates=1, keys_held=2, gaps=0
    )


def test_deduper_inclusive_replay() -> None:
    d = NotificationDeduper(["a"])
    assert d.offer("a", 5, "x")
    assert d.offer("a", 6, "y")
    # Drop in the middle of slot 6; the replay from 6 repeats y and brings z.
    assert d.cursor("a") == 6
    assert not d.offer("a", 6, "y")
    assert d.offer("a", 6, "z")
    assert d.offer("a", 7, "w")
    assert d.duplicates == 1


def test_deduper_prunes_below_the_lowest_cursor() -> None:
    d = NotificationDeduper(["a", "b"], start_slot=1)
    assert d.floor == 1
    d.offer("a", 1, "k1")
    d.offer("a", 2, "k2")
    d.offer("a", 3, "k3")
    assert d.keys_held == 3
    assert d.floor == 1
    d.offer("b", 3, "k3")
    # b passed slots 1 and 2; a is at 3: nothing below 3 can come again.
    assert d.floor == 3
    assert d.keys_held == 1
    d.offer("b", 4, "k4")
    assert d.keys_held == 2


def test_deduper_without_start_slot_keeps_everything_until_all_have_cursors() -> None:
    d = NotificationDeduper(["a", "b"])
    for slot in range(1, 6):
        d.offer("a", slot, f"k{slot}")
    assert d.floor is None
    assert d.keys_held == 5
    d.advance("b", 4)
    assert d.floor == 4
    assert d.keys_held == 2
    d.advance("b", 2)  # never moves back
    assert d.cursor("b") == 4


def test_deduper_key_below_floor_is_delivered_but_not_kept() -> None:
    d = NotificationDeduper(["a", "b"], start_slot=10)
    assert d.offer("a", 12, "k1")
    assert d.offer("b", 12, "k2")
    assert d.floor == 12
    # Out of order within the session's range: new, delivered, but below every cursor.
    assert d.offer("a", 11, "late")
    assert d.keys_held == 2
    assert d.cursor("a") == 12


def test_deduper_moves_nothing_until_commit() -> None:
    d = NotificationDeduper(["a"], start_slot=10)
    assert d.check("a", 11, "k") is Offer.NEW
    assert (d.cursor("a"), d.keys_held, d.delivered) == (10, 0, 0)
    # The hand-over was cancelled: the replay brings it again, still new.
    assert d.check("a", 11, "k") is Offer.NEW
    d.commit("a", 11, "k")
    assert (d.cursor("a"), d.keys_held, d.delivered) == (11, 1, 1)
    assert d.check("a", 11, "k") is Offer.DUPLICATE
    assert d.duplicates == 1


def test_deduper_refuses_slots_outside_the_session() -> None:
    d = NotificationDeduper(["a"], start_slot=10, end_slot=20)
    assert d.check("a", 9, "early") is Offer.IMPLAUSIBLE
    assert d.check("a", 21, "late") is Offer.IMPLAUSIBLE
    assert d.check("a", 10**15, "far") is Offer.IMPLAUSIBLE
    assert not d.offer("a", 21, "late")
    assert d.implausible == 4
    assert (d.cursor("a"), d.keys_held, d.duplicates) == (10, 0, 0)
    assert d.offer("a", 20, "last")
    unbounded = NotificationDeduper(["a"])
    assert unbounded.in_range(-(10**9))
    assert unbounded.offer("a", 10**15, "anything")


def test_deduper_gap() -> None:
    d = NotificationDeduper(["a", "b"], start_slot=100)
    d.offer("a", 120, "x")
    assert d.gap("a", 110) is None
    assert d.gap("a", 120) is None
    assert d.gap("a", 150) == (120, 149)
    assert d.cursor("a") == 120  # not until the StreamGap was handed over
    d.commit_gap("a", (120, 149))
    assert d.cursor("a") == 150
    assert d.gap("b", 150) == (100, 149)
    d.commit_gap("b", (100, 149))
    assert d.gaps == 2
    assert d.statistics().gaps == 2
    assert d.floor == 150


def test_deduper_gap_beyond_the_end_is_refused() -> None:
    d = NotificationDeduper(["a"], start_slot=100, end_slot=199)
    assert d.gap("a", 199) == (100, 198)
    with pytest.raises(ValueError, match="beyond the session's end slot 199"):
        d.gap("a", 200)


def test_deduper_gap_needs_a_known_start() -> None:
    d = NotificationDeduper(["a"])
    with pytest.raises(
        ValueError,
        match=r"^subscription 'a' has no cursor and the deduper no start_slot; "
        r"the start of the gap is unknown$",
    ):
        d.gap("a", 5)


def test_deduper_rejects_unknown_and_empty() -> None:
    d = NotificationDeduper(["a"])
    with pytest.raises(KeyError, match="unknown subscription 'z'"):
        d.offer("z", 1, "k")
    with pytest.raises(KeyError):
        d.cursor("z")
    with pytest.raises(
        ValueError, match=r"^a NotificationDeduper needs at least one subscription$"
    ):
        NotificationDeduper([])


def test_deduper_repeated_subscription_names_collapse() -> None:
    d = NotificationDeduper(["a", "a", "b"])
    assert d.subscriptions == ("a", "b")
    assert repr(d) == "<NotificationDeduper subscriptions=2 floor=None keys_held=0 duplicates=0>"


FIRST_SLOT = 100


@st.composite
def executions(draw: st.DrawFn) -> tuple[list[str], list[tuple[int, str, frozenset[str]]]]:
    """Subscriptions and an execution: (slot, key, matching subscriptions) in order."""
    subs = [f"addr{i}" for i in range(draw(st.integers(1, 4)))]
    txs: list[tuple[int, str, frozenset[str]]] = []
    for slot in range(FIRST_SLOT, FIRST_SLOT + draw(st.integers(1, 10))):
        for _ in range(draw(st.integers(0, 3))):
            members = draw(st.sets(st.sampled_from(subs), min_size=1))
            txs.append((slot, f"sig{len(txs)}", frozenset(members)))
    return subs, txs


@settings(max_examples=200, deadline=None)
@given(data=st.data(), execution=executions(), start_slot=st.sampled_from([None, FIRST_SLOT]))
def test_deduper_delivers_each_notification_once_across_drops(
    data: st.DataObject,
    execution: tuple[list[str], list[tuple[int, str, frozenset[str]]]],
    start_slot: int | None,
) -> None:
    subs, txs = execution
    last_slot = txs[-1][0] if txs else FIRST_SLOT
    streams = {s: [(slot, key) for slot, key, m in txs if s in m] for s in subs}
    slots_of = {s: [slot for slot, _ in streams[s]] for s in subs}
    slot_of_key = {key: slot for slot, key, _ in txs}
    d = NotificationDeduper(subs, start_slot=start_slot)
    pos = dict.fromkeys(subs, 0)  # the server's next index per subscription
    cursor: dict[str, int | None] = dict.fromkeys(subs, start_slot)
    delivered: list[tuple[str, int]] = []  # (subscription, index in its stream)
    delivered_keys: list[str] = []
    offered: set[str] = set()
    gaps: list[tuple[str, int, int]] = []
    offers = drops = cuts = 0

    def check_memory() -> None:
        for s in subs:
            assert d.cursor(s) == cursor[s]
        known = [c for c in cursor.values() if c is not None]
        floor = min(known) if len(known) == len(subs) else None
        assert d.floor == floor
        kept = [k for k in delivered_keys if floor is None or slot_of_key[k] >= floor]
        assert d.keys_held == len(kept)

    while any(pos[s] < len(streams[s]) for s in subs):
        live = [s for s in subs if pos[s] < len(streams[s])]
        cut = drops < 4 and data.draw(st.integers(0, 7)) == 0
        if drops < 4 and data.draw(st.integers(0, 5)) == 0:
            drops += 1
            for s in subs:
                c = cursor[s]
                if c is not None and data.draw(st.integers(0, 3)) == 0:
                    # The replay window no longer reaches the cursor.
                    oldest = data.draw(st.integers(c, last_slot + 1))
                    gap = d.gap(s, oldest)
                    if oldest > c:
                        assert gap == (c, oldest - 1)
                        if not data.draw(st.booleans()):  # else its hand-over was cut off
                            d.commit_gap(s, gap)
                            gaps.append((s, c, oldest - 1))
                            cursor[s] = c = oldest
                    else:
                        assert gap is None
                # replayFromSlot is inclusive: the cursor's slot comes again in full.
                replay_from = FIRST_SLOT if c is None else c
                pos[s] = bisect.bisect_left(slots_of[s], replay_from)
        else:
            s = data.draw(st.sampled_from(live))
            slot, key = streams[s][pos[s]]
            offers += 1
            verdict = d.check(s, slot, key)
            if verdict is Offer.NEW and cut:
                # The hand-over is cancelled and the connection dies: nothing recorded, so
                # every subscription replays from its cursor, this one included.
                drops += 1
                cuts += 1
                for t in subs:
                    c = cursor[t]
                    pos[t] = bisect.bisect_left(slots_of[t], FIRST_SLOT if c is None else c)
                check_memory()
                continue
            offered.add(key)
            if verdict is Offer.NEW:
                d.commit(s, slot, key)
                delivered.append((s, pos[s]))
                delivered_keys.append(key)
            cursor[s] = slot if cursor[s] is None else max(slot, cursor[s])  # type: ignore[type-var]
            pos[s] += 1
        check_memory()

    # Exactly once: everything received is delivered, nothing twice.
    assert len(delivered_keys) == len(set(delivered_keys))
    assert set(delivered_keys) == offered
    assert d.duplicates == offers - len(delivered_keys) - cuts
    # In order per subscription.
    for s in subs:
        indices = [i for sub, i in delivered if sub == s]
        assert indices == sorted(indices)
        assert len(indices) == len(set(indices))
    # Nothing lost silently: a missing key lies inside a reported gap of every one of its
    # subscriptions.
    for slot, key, members in txs:
        if key not in offered:
            for s in members:
                assert any(g_s == s and lo <= slot <= hi for g_s, lo, hi in gaps), (key, s)
    if not gaps:
        assert offered == {key for _, key, _ in txs}


def test_deduper_accepts_any_hashable_keys() -> None:
    key: Hashable = ("sig", "account")
    d = NotificationDeduper([("program", "X")], start_slot=0)
    assert d.offer(("program", "X"), 0, key)
    assert not d.offer(("program", "X"), 0, ("sig", "account"))
