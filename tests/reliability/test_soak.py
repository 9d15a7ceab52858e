"""Soak over real loopback TCP: many sessions and parallel batches under random chaos.

A local server listens on 127.0.0.1 with `ChaosConfig` dropping or closing (1001, 1011,
1012, 1013) a socket after a small fraction of the messages it writes, on both planes.
Eight resumable sessions (transactions and account diffs) and two parallel batches run at
once, each with its own stride; every one must complete, with exactly the notifications
and control events the server's ledger says it executed. Real sockets and the real clock:
the only wall-time figure used is a generous hang guard.

The default run takes about 15 s on one core. Longer soaks (``nox -s soak``):

* ``TRIO_BACKTEST_SOAK_SECONDS``: keep starting new rounds until this many seconds passed;
* ``TRIO_BACKTEST_SOAK_SESSIONS`` / ``_BATCHES`` / ``_SLOTS``: the size of one round;
* ``TRIO_BACKTEST_SOAK_SEED``: the chaos seed (the interleaving over TCP varies anyway).
"""

from __future__ import annotations

import os
import random
from collections import Counter

import attrs
import trio

from tests.conftest import SECRET_KEY
from tests.reliability.chaos_support import (
    Kind,
    check_and_forget_captured_logs,
    check_control_events,
    check_history,
    check_subscription_call,
    client_tasks_left,
    forbid,
    live_tasks,
)
from trio_backtest import (
    ClientConfig,
    Completed,
    ContinueParams,
    CreateSession,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    StatusCell,
    open_backtest_session,
    open_parallel_session,
)
from trio_backtest.server import ChaosConfig, LocalServer, open_local_server


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"TRIO_BACKTEST_SOAK_{name}", "") or default)


SESSIONS = int(_env("SESSIONS", 8))
BATCHES = int(_env("BATCHES", 2))
SLOTS = int(_env("SLOTS", 100))
SECONDS = _env("SECONDS", 0)
SEED = int(_env("SEED", 11))
BUNDLE = 20
HANG_GUARD = SECONDS + 120.0
"""Wall seconds after which the soak counts as hung (not a speed requirement)."""


@attrs.define
class _Run:
    """One (sub-)session's events and what to check them against."""

    label: str
    session_id: str
    range: tuple[int, int]
    parallel: bool
    events: list[ManagedEvent] = attrs.Factory(list)
    continues: int = 0
    calls: list[tuple[str, Kind, tuple[str, ...]]] = attrs.Factory(list)
    cells: list[tuple[str, StatusCell]] = attrs.Factory(list)


async def _drive(session: ManagedBacktestSession, run: _Run, stride: int) -> None:
    async for event in session.events():
        run.events.append(event)
        if isinstance(event, ReadyForContinue):
            await session.send_continue(ContinueParams(advance_count=stride))
            run.continues += 1


async def _subscribe(session: ManagedBacktestSession, run: _Run, programs: tuple[str, ...]) -> None:
    tx = await session.subscribe_transactions(programs[:2])
    run.calls.append((tx.name, "transactions", programs[:2]))
    run.cells.append((tx.name, tx.status))
    diffs = await session.subscribe_account_diffs(programs[2:3], compression="zstd")
    run.calls.append((diffs.name, "account_diffs", programs[2:3]))
    run.cells.append((diffs.name, diffs.status))


async def _single(
    server: LocalServer, config: ClientConfig, index: int, start: int, runs: list[_Run]
) -> None:
    rng = random.Random(index)
    programs = tuple(rng.sample(server.ledger.programs, 3))
    create = CreateSession(start_slot=start, slot_count=SLOTS - 1, disconnect_timeout_secs=300)
    async with open_backtest_session(server.url, SECRET_KEY, create, config=config) as session:
        run = _Run(f"session {index}", session.info.session_id, (start, start + SLOTS - 1), False)
        runs.append(run)
        run.cells.append(("control", session.status))
        await _subscribe(session, run, programs)
        await _drive(session, run, rng.randint(1, 12))


async def _batch(
    server: LocalServer, config: ClientConfig, index: int, start: int, runs: list[_Run]
) -> None:
    rng = random.Random(1_000 + index)
    programs = tuple(rng.sample(server.ledger.programs, 3))
    create = CreateSession(start_slot=start, slot_count=SLOTS - 1, disconnect_timeout_secs=300)
    async with open_parallel_session(server.url, SECRET_KEY, create, config=config) as batch:
        mine: list[_Run] = []
        for number, sub in enumerate(batch.sub_sessions):
            run = _Run(f"batch {index}.{number}", sub.info.session_id, sub.range, True)
            mine.append(run)
            run.cells.append(("control", batch.status))
            tx = await sub.subscribe_transactions(programs[:2])
            run.calls.append((tx.name, "transactions", programs[:2]))
            run.cells.append((tx.name, tx.status))
        runs.extend(mine)
        async with trio.open_nursery() as nursery:
            for sub, run in zip(batch.sub_sessions, mine, strict=True):
                nursery.start_soon(_drive, sub, run, rng.randint(1, 12))


def _check(server: LocalServer, runs: list[_Run], tally: Counter[str]) -> None:
    for run in runs:
        start, end = run.range
        executed = server.executed_slots(run.session_id)
        assert executed == list(range(start, end + 1)), f"{run.label}: executed {executed}"
        assert isinstance(run.events[-1], Completed), f"{run.label} did not complete"
        for name, cell in run.cells:
            check_history(f"{run.label} {name}", cell)
        tally["control events"] += check_control_events(
            run.label,
            run.events,
            server,
            run.session_id,
            parallel=run.parallel,
            complete=True,
            continues=run.continues,
        )
        for name, kind, addresses in run.calls:
            report = check_subscription_call(
                f"{run.label} {name}",
                run.events,
                kind,
                addresses,
                server,
                executed,
                end,
                complete=True,
            )
            # The replay window (100 slots) covers every range here: nothing may be lost.
            assert report.window_gaps == report.tail_gaps == 0, f"{run.label}: a gap"
            assert report.delivered == report.expected
            tally["notifications"] += report.delivered


async def test_soak_many_sessions_over_tcp_with_random_drops() -> None:
    chaos = ChaosConfig(seed=SEED, drop_probability=0.002, close_probability=0.001, plane="any")
    # A 1013 asks for at least 5 s of patience; a tenth of that keeps the soak short.
    config = ClientConfig(reconnect_overload_min_delay=0.5)
    small_buffer = attrs.evolve(config, event_buffer=4)
    tally: Counter[str] = Counter()
    baseline = live_tasks()
    with trio.fail_after(HANG_GUARD):
        async with open_local_server(
            api_keys=(SECRET_KEY,),
            seed=SEED,
            chaos=chaos,
            bundle_size=BUNDLE,
            # Every executed transaction writes its fee payer (a System account) and most
            # carry a compute-budget instruction, so a subscription to those programs sees
            # far more notifications per slot than before the ledger ran for real. Chaos
            # drops per message: with 20 transactions per slot a replay after a long
            # backoff is longer than the distance between drops and never completes.
            transactions_per_slot=10.0,
            # A create lost in a drop leaves a detached session behind until it expires.
            max_sessions_per_key=100_000,
        ) as server:
            server_nurseries = list(trio.lowlevel.current_task().child_nurseries)
            began = trio.current_time()
            round_ = 0
            while round_ == 0 or trio.current_time() - began < SECONDS:
                runs: list[_Run] = []
                base = 10_000 + round_ * 100_000
                async with trio.open_nursery() as nursery:
                    for index in range(SESSIONS):
                        # Every other session hands its events over a small buffer, so
                        # drops meet managers waiting for their user.
                        own = small_buffer if index % 2 else config
                        nursery.start_soon(_single, server, own, index, base, runs)
                    for index in range(BATCHES):
                        start = base + (index + 1) * 10 * SLOTS
                        own = small_buffer if index % 2 else config
                        nursery.start_soon(_batch, server, own, index, start, runs)
                forbid(client_tasks_left(baseline, server_nurseries), "client tasks left")
                _check(server, runs, tally)
                tally["log records"] += check_and_forget_captured_logs(SECRET_KEY)
                tally["sessions"] += len(runs)
                round_ += 1
            stats = server.statistics()
    fired = stats.faults_fired
    assert fired.get("chaos_drop", 0) + fired.get("chaos_close", 0) > 0, "no chaos fired"
    assert stats.connections_accepted > SESSIONS * 3 + BATCHES
    if os.environ.get("TRIO_BACKTEST_CHAOS_REPORT"):
        print(f"\nsoak: rounds={round_} {dict(tally)} faults={dict(fired)}")
