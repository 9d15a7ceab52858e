"""ReconnectCoordinator and StreamingGuard: the streaming count, the gate, the single slot."""

from __future__ import annotations

import math
import queue
from collections.abc import Callable
from contextlib import AsyncExitStack

import attrs
import outcome
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from trio_backtest._coordinator import (
    CoordinatorStatistics,
    ReconnectCoordinator,
    StreamingGuard,
)
from trio_backtest._subscription import CoordinatorLike, StreamingGuardLike


@attrs.define(eq=False)
class Reconnect:
    """A task that takes the reconnect slot, as a subscription manager's gated attempt does."""

    coordinator: ReconnectCoordinator
    name: str
    admissions: list[str]
    enter_on_leave: bool = True
    leave: trio.Event = attrs.Factory(trio.Event)
    streaming_at_admission: int | None = None
    guard: StreamingGuard | None = None
    holding: bool = False
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    async def run(self) -> None:
        with self.scope:
            async with self.coordinator.reconnect_slot():
                self.holding = True
                self.admissions.append(self.name)
                self.streaming_at_admission = self.coordinator.statistics().streaming
                try:
                    await self.leave.wait()
                    if self.enter_on_leave:
                        self.guard = self.coordinator.enter()
                finally:
                    self.holding = False


def stats(
    streaming: int = 0, parked: int = 0, parks: int = 0, max_parked: int = 0, holder: bool = False
) -> CoordinatorStatistics:
    return CoordinatorStatistics(
        streaming=streaming, parked=parked, parks=parks, max_parked=max_parked, holder=holder
    )


# --- StreamingGuard ----------------------------------------------------------------------


def test_enter_counts_until_release() -> None:
    coordinator = ReconnectCoordinator()
    first, second = coordinator.enter(), coordinator.enter()
    assert coordinator.statistics() == stats(streaming=2)
    first.release()
    assert first.released
    assert not second.released
    assert coordinator.statistics() == stats(streaming=1)
    second.release()
    assert coordinator.statistics() == stats()


def test_release_is_idempotent() -> None:
    coordinator = ReconnectCoordinator()
    guard = coordinator.enter()
    other = coordinator.enter()
    for _ in range(3):
        guard.release()
    assert coordinator.statistics().streaming == 1
    assert not other.released


def test_guard_is_a_context_manager() -> None:
    coordinator = ReconnectCoordinator()
    with coordinator.enter() as guard:
        assert isinstance(guard, StreamingGuard)
        assert coordinator.statistics().streaming == 1
    assert guard.released
    assert coordinator.statistics().streaming == 0
    with pytest.raises(KeyError), coordinator.enter():
        raise KeyError("boom")
    assert coordinator.statistics().streaming == 0
    guard.release()  # after the block too: still idempotent
    assert coordinator.statistics().streaming == 0


async def test_fits_what_the_subscription_managers_expect() -> None:
    coordinator: CoordinatorLike = ReconnectCoordinator()  # checked by mypy
    async with coordinator.reconnect_slot():
        guard: StreamingGuardLike = coordinator.enter()
    guard.release()
    guard.release()
    assert isinstance(coordinator, ReconnectCoordinator)
    assert coordinator.statistics() == stats()


def test_reprs_tell_the_state() -> None:
    coordinator = ReconnectCoordinator()
    guard = coordinator.enter()
    assert repr(guard) == "<StreamingGuard streaming>"
    assert repr(coordinator) == "<ReconnectCoordinator streaming=1 parked=0 holder=False>"
    guard.release()
    assert repr(guard) == "<StreamingGuard released>"


# --- The gate and the slot ----------------------------------------------------------------


async def test_slot_is_free_at_once_when_nothing_streams() -> None:
    coordinator = ReconnectCoordinator()
    async with coordinator.reconnect_slot():
        assert coordinator.statistics() == stats(holder=True)
    assert coordinator.statistics() == stats()


async def test_waiter_parks_until_the_last_stream_ends() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guards = [coordinator.enter(), coordinator.enter()]
    waiter = Reconnect(coordinator, "w", admissions)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter.run)
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == []
        assert coordinator.statistics() == stats(streaming=2, parked=1, parks=1, max_parked=1)
        guards[0].release()
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == []
        guards[1].release()
        # the slot is handed over when the count reaches zero, before the waiter even runs
        assert coordinator.statistics() == stats(parks=1, max_parked=1, holder=True)
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["w"]
        assert waiter.streaming_at_admission == 0
        waiter.leave.set()
    assert waiter.guard is not None
    assert coordinator.statistics() == stats(streaming=1, parks=1, max_parked=1)


async def test_only_one_holder_at_a_time() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    first = Reconnect(coordinator, "a", admissions, enter_on_leave=False)
    second = Reconnect(coordinator, "b", admissions, enter_on_leave=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second.run)
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["a"]
        assert coordinator.statistics() == stats(parked=1, parks=1, max_parked=1, holder=True)
        first.leave.set()
        await trio.testing.wait_all_tasks_blocked()
        # the first left without connecting: nothing streams, so the next goes at once
        assert admissions == ["a", "b"]
        assert not first.holding
        assert second.holding
        second.leave.set()
    assert coordinator.statistics() == stats(parks=1, max_parked=1)


async def test_holder_that_entered_keeps_the_next_waiter_parked() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    first = Reconnect(coordinator, "a", admissions)
    second = Reconnect(coordinator, "b", admissions)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(second.run)
        await trio.testing.wait_all_tasks_blocked()
        first.leave.set()
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["a"]
        assert coordinator.statistics() == stats(streaming=1, parked=1, parks=1, max_parked=1)
        assert first.guard is not None
        first.guard.release()
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["a", "b"]
        assert second.streaming_at_admission == 0
        second.leave.set()
    assert coordinator.statistics().streaming == 1


async def test_waiters_are_admitted_in_arrival_order() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guard = coordinator.enter()
    waiters = [Reconnect(coordinator, str(i), admissions, enter_on_leave=False) for i in range(5)]
    async with trio.open_nursery() as nursery:
        for waiter in waiters:
            nursery.start_soon(waiter.run)
            await trio.testing.wait_all_tasks_blocked()
        assert coordinator.statistics() == stats(streaming=1, parked=5, parks=5, max_parked=5)
        guard.release()
        for waiter in waiters:
            await trio.testing.wait_all_tasks_blocked()
            assert admissions[-1] == waiter.name
            waiter.leave.set()
    assert admissions == ["0", "1", "2", "3", "4"]
    assert coordinator.statistics() == stats(parks=5, max_parked=5)


async def test_a_newcomer_cannot_take_the_slot_handed_to_a_waiter() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guard = coordinator.enter()
    waiter = Reconnect(coordinator, "waiter", admissions, enter_on_leave=False)
    newcomer = Reconnect(coordinator, "newcomer", admissions, enter_on_leave=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter.run)
        await trio.testing.wait_all_tasks_blocked()
        guard.release()
        nursery.start_soon(newcomer.run)  # races the woken waiter to its first step
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["waiter"]
        waiter.leave.set()
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["waiter", "newcomer"]
        newcomer.leave.set()


async def test_all_streams_down_means_no_one_waits() -> None:
    # The deadlock hazard: with every connection of a batch down, the first waiter must
    # be admitted, and the others follow as each attempt fails without entering.
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guards = [coordinator.enter() for _ in range(3)]
    waiters = [Reconnect(coordinator, str(i), admissions, enter_on_leave=False) for i in range(3)]
    async with trio.open_nursery() as nursery:
        for waiter, guard in zip(waiters, guards, strict=True):
            guard.release()  # this connection dropped ...
            nursery.start_soon(waiter.run)  # ... and its manager asks to reconnect
            await trio.testing.wait_all_tasks_blocked()
        # the last drop handed the slot to the first waiter; the last one queued behind
        assert admissions == ["0"]
        assert coordinator.statistics() == stats(parked=2, parks=3, max_parked=2, holder=True)
        for waiter in waiters:
            assert coordinator.statistics().holder, "a waiter waits while the link is idle"
            waiter.leave.set()
            await trio.testing.wait_all_tasks_blocked()
    assert admissions == ["0", "1", "2"]
    assert coordinator.statistics() == stats(parks=3, max_parked=2)


# --- Cancellation ---------------------------------------------------------------------------


async def test_cancelled_waiter_leaves_no_trace() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guard = coordinator.enter()
    doomed = Reconnect(coordinator, "doomed", admissions)
    later = Reconnect(coordinator, "later", admissions, enter_on_leave=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(doomed.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(later.run)
        await trio.testing.wait_all_tasks_blocked()
        assert coordinator.statistics() == stats(streaming=1, parked=2, parks=2, max_parked=2)
        doomed.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert doomed.scope.cancelled_caught
        assert coordinator.statistics() == stats(streaming=1, parked=1, parks=2, max_parked=2)
        guard.release()
        await trio.testing.wait_all_tasks_blocked()
        assert admissions == ["later"]
        later.leave.set()
    assert coordinator.statistics() == stats(parks=2, max_parked=2)


async def test_waiter_gives_up_after_a_timeout(autojump_clock: trio.abc.Clock) -> None:
    coordinator = ReconnectCoordinator()
    guard = coordinator.enter()
    admitted = False
    with trio.move_on_after(30) as waiting:
        async with coordinator.reconnect_slot():
            admitted = True
    assert waiting.cancelled_caught
    assert not admitted
    assert coordinator.statistics() == stats(streaming=1, parks=1, max_parked=1)
    guard.release()
    assert coordinator.statistics() == stats(parks=1, max_parked=1)
    async with coordinator.reconnect_slot():  # free again, without waiting
        assert coordinator.statistics().holder


async def test_cancelled_holder_releases_the_slot() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    holder = Reconnect(coordinator, "holder", admissions)
    waiter = Reconnect(coordinator, "waiter", admissions, enter_on_leave=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter.run)
        await trio.testing.wait_all_tasks_blocked()
        holder.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert holder.scope.cancelled_caught
        assert holder.guard is None
        assert admissions == ["holder", "waiter"]
        waiter.leave.set()
    assert coordinator.statistics() == stats(parks=1, max_parked=1)


async def test_waiter_cancelled_just_after_the_handover_releases_the_slot() -> None:
    coordinator = ReconnectCoordinator()
    admissions: list[str] = []
    guard = coordinator.enter()
    waiter = Reconnect(coordinator, "waiter", admissions)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter.run)
        await trio.testing.wait_all_tasks_blocked()
        guard.release()  # hands the slot over ...
        waiter.scope.cancel()  # ... and the waiter is cancelled before it runs again
        await trio.testing.wait_all_tasks_blocked()
    assert waiter.scope.cancelled_caught
    assert admissions == ["waiter"]
    assert coordinator.statistics() == stats(parks=1, max_parked=1)


async def test_an_error_inside_the_slot_releases_it() -> None:
    coordinator = ReconnectCoordinator()
    with pytest.raises(OSError, match="connect failed"):
        async with coordinator.reconnect_slot():
            raise OSError("connect failed")
    assert coordinator.statistics() == stats()


async def test_a_cancelled_task_does_not_take_a_free_slot() -> None:
    coordinator = ReconnectCoordinator()
    admitted = False
    with trio.CancelScope() as scope:
        scope.cancel()
        async with coordinator.reconnect_slot():
            admitted = True
    assert scope.cancelled_caught
    assert not admitted
    assert coordinator.statistics() == stats()


async def test_holding_the_slot_twice_is_an_error() -> None:
    coordinator = ReconnectCoordinator()
    async with coordinator.reconnect_slot():
        with pytest.raises(RuntimeError, match="already holds"):
            async with coordinator.reconnect_slot():
                pass  # pragma: no cover
        assert coordinator.statistics() == stats(holder=True)
    assert coordinator.statistics() == stats()


# --- A state machine over the coordinator ------------------------------------------------


class GuestTrio:
    """A Trio guest run on a virtual clock, stepped to quiescence from synchronous code.

    Hypothesis rules are synchronous; each one hands an action to the Trio run and then
    runs the host side of the guest loop until every Trio task is blocked again.
    """

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._callbacks: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._outcome: outcome.Outcome[None] | None = None
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._settled = False
        trio.lowlevel.start_guest_run(
            self._main,
            run_sync_soon_threadsafe=self._callbacks.put,
            done_callback=self._done,
            clock=self.clock,
        )
        self._pump(lambda: self._token is not None)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            await trio.sleep_forever()

    def _done(self, result: outcome.Outcome[None]) -> None:
        self._outcome = result

    def _pump(self, finished: Callable[[], bool]) -> None:
        while not finished():
            if self._outcome is not None:
                self._outcome.unwrap()  # a task failed: raise its error here
                raise AssertionError("the Trio run ended early")
            self._callbacks.get(timeout=10)()

    def step(self, action: Callable[[trio.Nursery], object]) -> None:
        """Run ``action`` inside Trio, then let every task run until all are blocked."""
        assert self._token is not None

        async def act_then_settle(nursery: trio.Nursery) -> None:
            action(nursery)
            await trio.testing.wait_all_tasks_blocked()
            self._settled = True

        def start() -> None:
            assert self._nursery is not None
            self._nursery.start_soon(act_then_settle, self._nursery)

        self._settled = False
        self._token.run_sync_soon(start)
        self._pump(lambda: self._settled)

    def close(self) -> None:
        """Cancel everything still running and finish the run, failed or not."""
        if self._outcome is None:
            assert self._token is not None
            assert self._nursery is not None
            self._token.run_sync_soon(self._nursery.cancel_scope.cancel)
            while self._outcome is None:
                self._callbacks.get(timeout=10)()


@attrs.define(eq=False)
class Ticket:
    """One request for the reconnect slot, and what the model expects of it."""

    number: int
    patience: float | None
    """Virtual seconds it waits for the slot before giving up; ``None``: forever."""
    deadline: float
    state: str = "requested"
    """What the task did: requested (so parked), holding, left, cancelled, gave up."""
    expected: str = "requested"
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    leave: trio.Event = attrs.Factory(trio.Event)
    enter_on_leave: bool = False
    guard: StreamingGuard | None = None


class CoordinatorMachine(RuleBasedStateMachine):
    """Guards and slot requests in any order against a FIFO model of the coordinator."""

    guards = Bundle("guards")

    def __init__(self) -> None:
        super().__init__()
        self.trio = GuestTrio()
        self.coordinator = ReconnectCoordinator()
        self.tickets: list[Ticket] = []
        self.admissions: list[int] = []
        self.holders = 0
        # the model
        self.live: list[StreamingGuard] = []
        self.queue: list[Ticket] = []
        self.holder: Ticket | None = None
        self.expected_admissions: list[int] = []
        self.parks = 0
        self.max_parked = 0
        self.clean = True  # no rule or check failed; teardown may check the end state

    # -- the tasks ---------------------------------------------------------------------

    async def _request(self, ticket: Ticket) -> None:
        with ticket.scope:
            async with AsyncExitStack() as stack:
                with trio.move_on_after(ticket.patience or math.inf) as waiting:
                    await stack.enter_async_context(self.coordinator.reconnect_slot())
                if waiting.cancelled_caught:
                    ticket.state = "gave up"
                    return
                self.holders += 1
                ticket.state = "holding"
                self.admissions.append(ticket.number)
                try:
                    assert self.holders == 1, "two tasks hold the reconnect slot"
                    assert self.coordinator.statistics().streaming == 0, "admitted while streaming"
                    await ticket.leave.wait()
                    if ticket.enter_on_leave:
                        ticket.guard = self.coordinator.enter()
                finally:
                    self.holders -= 1
            ticket.state = "left"
        if ticket.scope.cancelled_caught:
            ticket.state = "cancelled"

    # -- the model ---------------------------------------------------------------------

    def _step(self, action: Callable[[trio.Nursery], object]) -> None:
        self.clean = False
        self.trio.step(action)

    def _admit(self) -> None:
        if not self.live and self.holder is None and self.queue:
            self.holder = self.queue.pop(0)
            self.holder.expected = "holding"
            self.expected_admissions.append(self.holder.number)

    def _leave_slot(self, ticket: Ticket, final_state: str) -> None:
        ticket.expected = final_state
        if ticket.guard is not None:
            self.live.append(ticket.guard)
        self.holder = None
        self._admit()

    # -- the rules ---------------------------------------------------------------------

    @rule(target=guards)
    def enter(self) -> StreamingGuard:
        guards: list[StreamingGuard] = []
        self._step(lambda _: guards.append(self.coordinator.enter()))
        self.live.extend(guards)
        return guards[0]

    @rule(guard=guards)
    def release(self, guard: StreamingGuard) -> None:
        self._step(lambda _: guard.release())
        if guard in self.live:
            self.live.remove(guard)
            self._admit()

    @rule(patience=st.none() | st.integers(1, 5))
    def request_slot(self, patience: int | None) -> None:
        now = self.trio.clock.current_time()
        ticket = Ticket(len(self.tickets), patience, now + (patience or math.inf))
        self.tickets.append(ticket)
        if not self.live and self.holder is None:
            assert not self.queue, "model: a waiter was left behind"
            self.holder = ticket
            ticket.expected = "holding"
            self.expected_admissions.append(ticket.number)
        else:
            self.queue.append(ticket)
            self.parks += 1
            self.max_parked = max(self.max_parked, len(self.queue))
        self._step(lambda nursery: nursery.start_soon(self._request, ticket))

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def cancel_waiter(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(self.queue))
        self.queue.remove(ticket)
        ticket.expected = "cancelled"
        self._step(lambda _: ticket.scope.cancel())

    @precondition(lambda self: self.holder is not None)
    @rule(target=guards, enter=st.booleans())
    def leave_slot(self, enter: bool) -> object:
        ticket = self.holder
        assert ticket is not None
        ticket.enter_on_leave = enter
        self._step(lambda _: ticket.leave.set())
        self._leave_slot(ticket, "left")
        return multiple(ticket.guard) if ticket.guard is not None else multiple()

    @precondition(lambda self: self.holder is not None)
    @rule()
    def cancel_holder(self) -> None:
        ticket = self.holder
        assert ticket is not None
        self._step(lambda _: ticket.scope.cancel())
        self._leave_slot(ticket, "cancelled")

    @rule(seconds=st.integers(1, 4))
    def let_time_pass(self, seconds: int) -> None:
        self._step(lambda _: self.trio.clock.jump(seconds))
        now = self.trio.clock.current_time()
        for ticket in [t for t in self.queue if t.deadline <= now]:
            self.queue.remove(ticket)  # leaving the queue never admits anyone
            ticket.expected = "gave up"

    # -- the checks --------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        got = self.coordinator.statistics()
        assert got == CoordinatorStatistics(
            streaming=len(self.live),
            parked=len(self.queue),
            parks=self.parks,
            max_parked=self.max_parked,
            holder=self.holder is not None,
        )
        assert not (got.parked and not got.streaming and not got.holder), "deadlock"
        assert [t.state for t in self.tickets] == [t.expected for t in self.tickets]
        assert self.admissions == self.expected_admissions  # first come, first served
        self.clean = True

    def teardown(self) -> None:
        try:
            if self.clean:
                self._everyone_gets_through()
        finally:
            self.trio.close()

    def _everyone_gets_through(self) -> None:
        """Once every stream ends, each waiter is admitted in turn; nothing leaks."""
        for guard in list(self.live):
            self.release(guard)
            self.matches_the_model()
        while self.holder is not None:
            self.leave_slot(enter=False)
            self.matches_the_model()
        assert all(t.state in ("left", "cancelled", "gave up") for t in self.tickets)
        assert self.coordinator.statistics() == CoordinatorStatistics(
            streaming=0, parked=0, parks=self.parks, max_parked=self.max_parked, holder=False
        )


CoordinatorMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None
)
TestCoordinatorMachine = CoordinatorMachine.TestCase
