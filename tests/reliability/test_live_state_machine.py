"""A Hypothesis state machine driving a live managed session, one quiescent step at a time.

A real Trio loop runs in a worker thread under a `trio.testing.MockClock` that never moves
on its own: the server on the in-memory network, one resumable session with a transaction
and an account-diff subscription. Every rule enters the loop with
`trio.from_thread.run` (continues, faults, reading events, moving time in small steps) and
returns only once every task is blocked again, so the invariants look at a system at rest:

* every connection's status moved only along legal transitions;
* the user never saw an event twice, nor one the server did not produce, and — whenever
  the server is idle, nothing is black-holed and every connection is up — the user has
  everything the server executed so far (control events and notifications);
* gating: every continue went onto the wire while every subscription was up.

Teardown lets the clock jump again, leaves the session block and checks the shutdown was
bounded and left no task.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import attrs
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.conftest import SECRET_KEY
from tests.reliability.chaos_support import (
    Action,
    BlackHole,
    Close,
    Drop,
    Plane,
    Refuse,
    check_and_forget_captured_logs,
    check_history,
    check_subscription_call,
    client_tasks_left,
    live_tasks,
)
from trio_backtest import (
    ClientConfig,
    Completed,
    ConnectionStatus,
    ContinueParams,
    ControlClosedError,
    ControlFailedError,
    CreateSession,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Slot,
    StatusCell,
    SubscriptionFailedError,
    Up,
    open_backtest_session,
)
from trio_backtest._status import check_transition
from trio_backtest.server import LocalServer, open_local_server

T = TypeVar("T")

START = 500
SLOTS = 30
END = START + SLOTS - 1
STEP = 0.5
"""Virtual seconds per clock step while time advances."""
WALL_TIMEOUT = 60.0
"""Wall seconds one rule may take before the machine is declared hung."""
CONFIG = ClientConfig()
TALLY: Counter[str] = Counter()
EXAMPLES = int(os.environ.get("TRIO_BACKTEST_STATE_MACHINE_EXAMPLES", "0") or 0) or 40


@attrs.frozen
class Snapshot:
    """The system at rest after a step, read inside the Trio thread."""

    statuses: dict[str, ConnectionStatus]
    histories: dict[str, tuple[ConnectionStatus, ...]]
    changes: dict[str, int]
    ready: bool
    completed: bool
    executed: list[int]
    state: str | None
    holes: bool
    """Whether any server socket is black-holed right now."""
    now: float


class _Spy:
    """A client WebSocket that notes, for every continue it sends, whether all subscriptions
    were up at that instant."""

    def __init__(self, inner: Any, machine: LiveSessionMachine) -> None:
        self._inner = inner
        self._machine = machine

    async def send_message(self, message: str | bytes) -> None:
        if isinstance(message, str) and '"method":"continue"' in message.replace(" ", ""):
            self._machine.continues_on_wire.append(self._machine.subscriptions_up())
        await self._inner.send_message(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class LiveSessionMachine(RuleBasedStateMachine):
    """Rules drive one live session; invariants check it at every resting point."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = trio.testing.MockClock(autojump_threshold=0)
        self.token: trio.lowlevel.TrioToken | None = None
        self.server: LocalServer | None = None
        self.session: ManagedBacktestSession | None = None
        self.cells: dict[str, StatusCell] = {}
        self.calls: list[tuple[str, Any, tuple[str, ...]]] = []
        self.events: list[ManagedEvent] = []
        self.errors: list[BaseException] = []
        self.continues_on_wire: list[bool] = []
        self.continues_sent = 0
        self.continue_pending = False
        self.kills = 0
        self.refusals = 0
        self.holes_until = 0.0
        self._changes_seen: dict[str, int] = {}
        self.crash: BaseException | None = None
        self.left_at: float | None = None
        self.closed_at: float | None = None
        self.leaked: list[str] = []
        self.snapshot: Snapshot | None = None
        self._nursery: trio.Nursery | None = None
        self._current: trio.CancelScope | None = None
        self._consumed_last = False
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        if not self._ready.wait(WALL_TIMEOUT) or self.crash is not None:
            raise AssertionError(f"the session did not start: {self.crash!r}")

    # ------------------------------------------------------------------ the Trio thread

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self.crash = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        baseline = live_tasks()
        async with open_local_server(
            api_keys=(SECRET_KEY,), tcp=False, seed=9, transactions_per_slot=5.0
        ) as server:
            server_nurseries = list(trio.lowlevel.current_task().child_nurseries)
            self.server = server
            inner = server.connector()

            async def connector(nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
                ws = await inner(nursery, url, **kwargs)
                return _Spy(ws, self) if url.endswith("/backtest") else ws

            create = CreateSession(start_slot=START, end_slot=END, disconnect_timeout_secs=900)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._stop = trio.Event()
                async with open_backtest_session(
                    server.url, SECRET_KEY, create, connector=connector, config=CONFIG
                ) as session:
                    self.session = session
                    self.cells["control"] = session.status
                    programs = server.ledger.programs
                    for kind, addresses in (
                        ("transactions", programs[:2]),
                        ("diffs", programs[2:3]),
                    ):
                        if kind == "transactions":
                            handle = await session.subscribe_transactions(addresses)
                        else:
                            handle = await session.subscribe_account_diffs(addresses)
                        self.cells[handle.name] = handle.status
                        self.calls.append(
                            (handle.name, kind.replace("diffs", "account_diffs"), addresses)
                        )
                    # From here on, time moves only when a rule moves it.
                    self.clock.autojump_threshold = math.inf
                    self.token = trio.lowlevel.current_trio_token()
                    await trio.testing.wait_all_tasks_blocked()
                    self.snapshot = self._snap()
                    self._ready.set()
                    await self._stop.wait()
                    self.left_at = trio.current_time()
                self.closed_at = trio.current_time()
                nursery.cancel_scope.cancel()
            self.leaked = client_tasks_left(baseline, server_nurseries)

    def _snap(self) -> Snapshot:
        assert self.server is not None
        assert self.session is not None
        sid = self.session.info.session_id
        return Snapshot(
            statuses={name: cell.value for name, cell in self.cells.items()},
            histories={name: cell.history for name, cell in self.cells.items()},
            changes={name: cell.changes for name, cell in self.cells.items()},
            ready=self.session.ready,
            completed=self.session.completed,
            executed=self.server.executed_slots(sid),
            state=self.server.session_state(sid),
            holes=any(conn.stream.black_holed for conn in self.server.faults.live()),
            now=trio.current_time(),
        )

    def subscriptions_up(self) -> bool:
        """Whether every subscription is up (called inside the Trio thread)."""
        return all(isinstance(c.value, Up) for n, c in self.cells.items() if n != "control")

    def _call(self, step: Callable[[], Awaitable[T]]) -> T:
        """Run ``step`` in the loop, wait until everything rests, take a snapshot."""
        if self.crash is not None:
            raise AssertionError(f"the Trio loop crashed: {self.crash!r}") from self.crash
        assert self.token is not None
        watchdog = threading.Timer(WALL_TIMEOUT, self._cancel_current)
        self._consumed_last = False

        async def run() -> T:
            with trio.CancelScope() as scope:
                self._current = scope
                result = await step()
                await trio.testing.wait_all_tasks_blocked()
                self.snapshot = self._snap()
                return result
            raise AssertionError(f"a step did not come to rest within {WALL_TIMEOUT} s")

        watchdog.start()
        try:
            return trio.from_thread.run(run, trio_token=self.token)
        finally:
            watchdog.cancel()

    def _cancel_current(self) -> None:
        scope = self._current
        if scope is not None and self.token is not None:
            self.token.run_sync_soon(scope.cancel)

    # ------------------------------------------------------------------ rules

    @property
    def _live(self) -> bool:
        return not self.errors and not (self.snapshot is not None and self.snapshot.completed)

    @precondition(lambda self: self._live)
    @rule()
    def consume(self) -> None:
        """Read every event that is available now."""
        self._call(self._read_available)
        self._consumed_last = True

    @precondition(lambda self: self._live and self.snapshot.ready and not self.continue_pending)
    @rule(advance=st.integers(1, 6))
    def send_continue(self, advance: int) -> None:
        """Ask for ``advance`` slots; the request may wait for the connections (gating)."""
        self._call(lambda: self._start_continue(advance))

    @precondition(lambda self: self._live)
    @rule(advance=st.integers(1, 6))
    def play(self, advance: int) -> None:
        """What a driver does: read what is there, continue if ready, read again."""

        async def step() -> None:
            await self._read_available()
            assert self.session is not None
            if self.session.ready and not self.continue_pending:
                await self._start_continue(advance)
                await trio.testing.wait_all_tasks_blocked()
                await self._read_available()

        self._call(step)
        self._consumed_last = True

    async def _read_available(self) -> None:
        assert self.session is not None
        session = self.session
        async with trio.open_nursery() as nursery:

            async def reader() -> None:
                try:
                    while not session.completed:
                        self.events.append(await session.next_event())
                except (ControlFailedError, SubscriptionFailedError) as exc:
                    self.errors.append(exc)

            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

    async def _start_continue(self, advance: int) -> None:
        assert self.session is not None
        assert self._nursery is not None
        session = self.session
        self.continue_pending = True

        async def send() -> None:
            try:
                await session.send_continue(ContinueParams(advance_count=advance))
                self.continues_sent += 1
            except (ControlFailedError, SubscriptionFailedError) as exc:
                self.errors.append(exc)
            except ControlClosedError as exc:
                # The documented answer when the block is left while the continue waits
                # for the connections (teardown); at any other time it is an error.
                assert self._stop is not None
                if not self._stop.is_set():
                    self.errors.append(exc)
            finally:
                self.continue_pending = False

        self._nursery.start_soon(send)
        await trio.lowlevel.checkpoint()

    @rule(
        action=st.one_of(
            st.just(Drop()),
            st.builds(Close, st.sampled_from((1001, 1011, 1012, 1013))),
            # Long enough for the keepalive to notice (see test_chaos).
            st.builds(BlackHole, st.integers(61, 120).map(float)),
            st.builds(Refuse, st.integers(1, 3), st.sampled_from((500, 503))),
        ),
        plane=st.sampled_from(("control", "data")),
        socket=st.none() | st.integers(0, 1),
    )
    def fault(self, action: Action, plane: Plane, socket: int | None) -> None:
        """Hit the plane's sockets (one data socket, or all of them) with ``action``."""

        async def step() -> None:
            assert self.server is not None
            faults = self.server.faults
            if isinstance(action, Refuse):
                self.refusals += action.count
                faults.refuse_upgrades(action.count, action.status, plane=plane)
            else:
                conns = sorted((c for c in faults.live() if c.plane == plane), key=_number)
                if socket is not None and plane == "data" and conns:
                    conns = [conns[socket % len(conns)]]
                for conn in conns:
                    if isinstance(action, Drop):
                        conn.drop()
                    elif isinstance(action, Close):
                        conn.close(action.code, "chaos")
                    else:
                        conn.stream.black_hole(action.seconds)
                        # A socket the server closes inside the hole stays half-open for
                        # the client until the hole ends: nothing is complete before that.
                        end = trio.current_time() + action.seconds
                        self.holes_until = max(self.holes_until, end)
                self.kills += len(conns)
            await trio.lowlevel.checkpoint()

        self._call(step)

    @rule(seconds=st.sampled_from((0.5, 2.0, 10.0, 30.0, 70.0)))
    def advance(self, seconds: float) -> None:
        """Let virtual time pass, in small steps, resting after each."""

        async def step() -> None:
            for _ in range(round(seconds / STEP)):
                self.clock.jump(STEP)
                await trio.testing.wait_all_tasks_blocked()

        self._call(step)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def statuses_move_legally(self) -> None:
        snap = self.snapshot
        assert snap is not None
        for name, changes in snap.changes.items():
            assert changes >= self._changes_seen.get(name, 0), f"{name}: status count went back"
        self._changes_seen = dict(snap.changes)
        for name, history in snap.histories.items():
            for old, new in itertools.pairwise(history):
                check_transition(old, new)
            assert history[-1] == snap.statuses[name]

    @invariant()
    def nothing_twice_nothing_foreign(self) -> None:
        snap = self.snapshot
        assert snap is not None
        assert self.server is not None
        assert self.session is not None
        slots = [e.slot for e in self.events if isinstance(e, Slot)]
        assert slots == list(range(START, START + len(slots))), "Slot events repeat or skip"
        progress = snap.executed + ([snap.executed[-1] + 1] if snap.executed else [START])
        assert not slots or slots[-1] <= min(progress[-1], END)
        readies = sum(isinstance(e, ReadyForContinue) for e in self.events)
        assert readies <= self.continues_sent + 1, "a ReadyForContinue too many"
        # Everything up to the slot in progress; only a finished run may be checked whole.
        executed = [s for s in progress if s <= END]
        clean = (
            snap.state in ("ready", "completed")
            and not snap.holes
            and snap.now >= self.holes_until
            and all(isinstance(s, Up) for s in snap.statuses.values())
            and not self.continue_pending
        )
        for name, kind, addresses in self.calls:
            check_subscription_call(
                name, self.events, kind, addresses, self.server, executed, END, complete=False
            )
        if snap.completed:
            assert isinstance(self.events[-1], Completed)
            assert snap.executed == list(range(START, END + 1))
            clean = True
        if clean and self._consumed_last:
            TALLY["complete checks at rest"] += 1
            done = snap.executed
            if done:
                assert slots == list(range(START, min(done[-1] + 1, END) + 1)), "a Slot missing"
            for name, kind, addresses in self.calls:
                report = check_subscription_call(
                    name, self.events, kind, addresses, self.server, done, END, complete=True
                )
                assert report.window_gaps == report.tail_gaps == 0

    @invariant()
    def gating_respected(self) -> None:
        assert all(self.continues_on_wire), "a continue went out while a subscription was down"

    @invariant()
    def fails_only_when_the_budget_could_run_out(self) -> None:
        if self.errors:
            assert self.kills + self.refusals > CONFIG.reconnect_max_attempts

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        TALLY["machines"] += 1
        TALLY["events seen"] += len(self.events)
        TALLY["continues"] += self.continues_sent
        TALLY["sockets hit"] += self.kills
        TALLY["refusals"] += self.refusals
        TALLY["completed sessions"] += bool(self.snapshot and self.snapshot.completed)
        if self.token is not None and self._stop is not None and self.crash is None:
            stop = self._stop

            def finish() -> None:
                self.clock.autojump_threshold = 0
                stop.set()

            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(finish, trio_token=self.token)
        self._thread.join(WALL_TIMEOUT)
        assert not self._thread.is_alive(), "the session did not shut down"
        if self.crash is not None:
            raise AssertionError(f"the Trio loop crashed: {self.crash!r}") from self.crash
        assert self.left_at is not None
        assert self.closed_at is not None
        assert self.closed_at - self.left_at <= CONFIG.graceful_close_timeout
        assert not self.leaked, f"client tasks left behind: {self.leaked}"
        TALLY["log records checked for the key"] += check_and_forget_captured_logs(SECRET_KEY)
        for name, cell in self.cells.items():
            check_history(name, cell)


def _number(conn: Any) -> int:
    return int(conn.number)


LiveSessionMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None
)
TestLiveSession = LiveSessionMachine.TestCase


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if os.environ.get("TRIO_BACKTEST_CHAOS_REPORT"):
        figures = ", ".join(f"{k}={v}" for k, v in sorted(TALLY.items()))
        sys.stderr.write(f"\nstate machine figures: {figures}\n")
