"""Eight sub-sessions on one saturated link, all dropped at once: with and without the gate.

Runs in virtual time (``MockClock``) against the local server's shared-link fault and
prints, for each setting: virtual seconds to complete, notifications delivered out of
those executed, failures, and the coordinator's parking figures.

    python benchmarks/bench_coordinator.py
"""

from __future__ import annotations

import logging
import time

import trio
import trio.testing

from trio_backtest import (
    ClientConfig,
    ContinueParams,
    CreateSession,
    ManagedSessionError,
    ParallelSubSession,
    ReadyForContinue,
    Transaction,
    open_parallel_session,
)
from trio_backtest.server import Link, open_local_server

KEY = "bench-key"
LINK_BYTES_PER_SECOND = 200_000


async def scenario(gate: bool, backpressure: str) -> str:
    async with open_local_server(
        api_keys=(KEY,),
        tcp=False,
        seed=1,
        bundle_size=25,
        backpressure=backpressure,
        queue_size=256,
    ) as srv:
        connector = srv.connector(link=Link(LINK_BYTES_PER_SECOND))
        ungated = 0 if gate else 1_000_000
        config = ClientConfig(reconnect_ungated_attempts=ungated)
        create = CreateSession(start_slot=0, end_slot=199, disconnect_timeout_secs=600)
        delivered = 0
        failures: list[str] = []
        began = trio.current_time()
        async with open_parallel_session(
            srv.url, KEY, create, connector=connector, config=config
        ) as batch:
            for sub in batch.sub_sessions:
                await sub.subscribe_transactions(srv.ledger.programs)

            async def run(sub: ParallelSubSession) -> None:
                nonlocal delivered
                try:
                    async for event in sub.events():
                        if isinstance(event, ReadyForContinue):
                            await sub.send_continue(ContinueParams(advance_count=10))
                        elif isinstance(event, Transaction):
                            delivered += 1
                except ManagedSessionError as exc:
                    failures.append(type(exc).__name__)

            async with trio.open_nursery() as nursery:
                for sub in batch.sub_sessions:
                    nursery.start_soon(run, sub)
                await trio.sleep(5)
                srv.faults.drop("data")
            coordinator = batch.statistics().coordinator
        elapsed = trio.current_time() - began
    executed = sum(len(srv.ledger.slot(s).transactions) for s in range(200))
    return (
        f"gate={'on ' if gate else 'off'} backpressure={backpressure:5}  "
        f"virtual time {elapsed:6.1f} s  delivered {delivered}/{executed}  "
        f"failures {len(failures)}  parks {coordinator.parks}  max parked {coordinator.max_parked}"
    )


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # the drops are on purpose: no warnings
    link = f"one link of {LINK_BYTES_PER_SECOND} B/s"
    print(f"8 sub-sessions x 25 slots, {link}, all streams dropped at t=5 s")
    for backpressure in ("block", "drop"):
        for gate in (True, False):
            wall = time.perf_counter()
            line = trio.run(
                scenario, gate, backpressure, clock=trio.testing.MockClock(autojump_threshold=0)
            )
            print(f"{line}  (wall {time.perf_counter() - wall:.1f} s)")


if __name__ == "__main__":
    main()
