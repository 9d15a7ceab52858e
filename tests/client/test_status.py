from __future__ import annotations

import itertools

import attrs
import pytest
import trio
import trio.testing

from trio_backtest._policy import DisconnectCause
from trio_backtest._status import (
    Closed,
    Connecting,
    ConnectionStatus,
    Failed,
    Parked,
    Reconnecting,
    StatusCell,
    Up,
    check_transition,
    is_terminal,
)

CAUSE = DisconnectCause.closed(1006)
ONE_OF_EACH: list[ConnectionStatus] = [
    Connecting(),
    Up(),
    Reconnecting(1, CAUSE),
    Parked(),
    Failed("gave up"),
    Closed(),
]
NAME = {Connecting: "C", Up: "U", Reconnecting: "R", Parked: "P", Failed: "F", Closed: "X"}
# Every legal move, by initials; everything else must be refused.
LEGAL = {
    "CU", "CR", "CF", "CX",
    "UR", "UF", "UX",
    "RR", "RP", "RU", "RF", "RX",
    "PR", "PU", "PF", "PX",
}  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new"),
    list(itertools.product(ONE_OF_EACH, repeat=2)),
    ids=lambda s: NAME[type(s)],
)
def test_transition_table(old: ConnectionStatus, new: ConnectionStatus) -> None:
    move = NAME[type(old)] + NAME[type(new)]
    if move in LEGAL:
        check_transition(old, new)
    else:
        with pytest.raises(ValueError, match="illegal status transition"):
            check_transition(old, new)


def test_terminal_statuses() -> None:
    assert [is_terminal(s) for s in ONE_OF_EACH] == [False, False, False, False, True, True]


def test_check_transition_rejects_non_status() -> None:
    with pytest.raises(TypeError, match="not a ConnectionStatus"):
        check_transition(Up(), "Closed")  # type: ignore[arg-type]


def test_values_are_frozen_matchable_and_equal_by_value() -> None:
    assert Connecting() == Connecting()
    assert Reconnecting(2, CAUSE) == Reconnecting(2, DisconnectCause.closed(1006))
    assert Reconnecting(2, CAUSE) != Reconnecting(3, CAUSE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Failed("x").reason = "y"  # type: ignore[misc]
    status: ConnectionStatus = Reconnecting(4, CAUSE)
    match status:
        case Reconnecting(attempt, cause):
            assert (attempt, cause) == (4, CAUSE)
        case _:
            pytest.fail("Reconnecting did not match")
    assert isinstance(Parked(), ConnectionStatus)


def test_reconnecting_attempt_starts_at_one() -> None:
    with pytest.raises(ValueError, match="starts at 1"):
        Reconnecting(0, CAUSE)


def test_cell_set_and_history() -> None:
    assert StatusCell().value == Connecting()
    cell = StatusCell()
    assert cell.changes == 0
    cell.set(Up())
    cell.set(Reconnecting(1, CAUSE))
    cell.set(Parked())
    cell.set(Up())
    assert cell.value == Up()
    assert cell.changes == 4
    assert cell.history == (Connecting(), Up(), Reconnecting(1, CAUSE), Parked(), Up())
    assert repr(cell) == "<StatusCell Up() changes=4>"


def test_cell_refuses_illegal_moves_and_keeps_its_value() -> None:
    cell = StatusCell(Up())
    with pytest.raises(ValueError, match="illegal"):
        cell.set(Connecting())
    assert cell.history == (Up(),)
    assert cell.changes == 0
    cell.set(Closed())
    with pytest.raises(ValueError, match="illegal"):
        cell.set(Up())
    assert cell.value == Closed()


def test_cell_rejects_a_non_status_initial_value() -> None:
    with pytest.raises(TypeError):
        StatusCell("Up")  # type: ignore[arg-type]


def test_history_is_bounded() -> None:
    cell = StatusCell(Up())
    for attempt in range(1, 201):
        cell.set(Reconnecting(attempt, CAUSE))
    assert len(cell.history) == 64
    assert cell.history[-1] == Reconnecting(200, CAUSE)
    assert cell.changes == 200


def test_finish_keeps_the_first_terminal_status() -> None:
    cell = StatusCell()
    assert cell.finish(Failed("401"))
    assert not cell.finish(Closed())
    assert cell.value == Failed("401")
    assert cell.changes == 1


async def test_wait_for_returns_at_once_when_it_holds() -> None:
    cell = StatusCell(Up())
    assert await cell.wait_for(lambda s: isinstance(s, Up)) == Up()


async def test_wait_for_is_a_checkpoint() -> None:
    cell = StatusCell(Up())
    with trio.CancelScope() as scope:
        scope.cancel()
        await cell.wait_for(lambda s: True)
    assert scope.cancelled_caught
    with trio.testing.assert_checkpoints():
        await cell.wait_for(lambda s: True)
    with trio.testing.assert_checkpoints():
        await cell.wait_changed(-1)


async def test_wait_for_wakes_on_matching_change(autojump_clock: trio.testing.MockClock) -> None:
    cell = StatusCell()
    seen: list[ConnectionStatus] = []

    async def waiter() -> None:
        seen.append(await cell.wait_for(is_terminal))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1)
        cell.set(Up())
        await trio.sleep(1)
        assert seen == []
        cell.set(Reconnecting(1, CAUSE))
        cell.set(Failed("budget"))
    assert seen == [Failed("budget")]
    assert trio.current_time() == 2


async def test_many_waiters_wake_together(autojump_clock: trio.testing.MockClock) -> None:
    cell = StatusCell()
    woke: list[int] = []

    async def waiter(n: int) -> None:
        await cell.wait_for(lambda s: isinstance(s, Up))
        woke.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(5):
            nursery.start_soon(waiter, n)
        await trio.sleep(3)
        cell.set(Up())
    assert sorted(woke) == [0, 1, 2, 3, 4]


async def test_wait_for_is_cancellation_safe(autojump_clock: trio.testing.MockClock) -> None:
    cell = StatusCell()
    with trio.move_on_after(5) as scope:
        await cell.wait_for(lambda s: isinstance(s, Up))
    assert scope.cancelled_caught
    assert trio.current_time() == 5
    # A cancelled wait leaves nothing behind: the cell and later waiters work normally.
    cell.set(Up())
    assert await cell.wait_for(lambda s: isinstance(s, Up)) == Up()


async def test_wait_changed(autojump_clock: trio.testing.MockClock) -> None:
    cell = StatusCell()
    assert await cell.wait_changed(-1) == 0

    async def later() -> None:
        await trio.sleep(2)
        cell.set(Up())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        assert await cell.wait_changed(cell.changes) == 1
        assert trio.current_time() == 2
    with trio.move_on_after(1) as scope:
        await cell.wait_changed(1)
    assert scope.cancelled_caught
