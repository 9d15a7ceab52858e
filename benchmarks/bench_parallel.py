"""Parallel batches of 4, 16 and 64 sub-sessions against a server in another process.

For each size: total notifications per second delivered to the user, the client's
peak memory (resident set) and memory per sub-session above the idle baseline. Each
size runs in a fresh child process so peaks do not carry over.

    python -m benchmarks.bench_parallel
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import trio

from benchmarks._server import KEY, server_process
from trio_backtest import (
    ContinueParams,
    CreateSession,
    ParallelSubSession,
    ReadyForContinue,
    Transaction,
    open_parallel_session,
)
from trio_backtest.server import Ledger, LedgerConfig

SLOTS_PER_SUB = 10
SIZES = (4, 16, 64)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def batch(url: str, size: int) -> tuple[int, float]:
    programs = Ledger(LedgerConfig(seed=1)).programs
    create = CreateSession(
        start_slot=0, end_slot=size * SLOTS_PER_SUB - 1, disconnect_timeout_secs=60
    )
    delivered = 0
    async with open_parallel_session(url, KEY, create) as parallel:
        assert len(parallel.sub_sessions) == size
        for sub in parallel.sub_sessions:
            await sub.subscribe_transactions(programs)
        began = time.perf_counter()

        async def drive(sub: ParallelSubSession) -> None:
            nonlocal delivered
            async for event in sub.events():
                if isinstance(event, ReadyForContinue):
                    await sub.send_continue(ContinueParams(advance_count=SLOTS_PER_SUB))
                elif isinstance(event, Transaction):
                    delivered += 1

        async with trio.open_nursery() as nursery:
            for sub in parallel.sub_sessions:
                nursery.start_soon(drive, sub)
        elapsed = time.perf_counter() - began
    return delivered, elapsed


def one(size: int) -> None:
    """Measure one batch size in this process and print one line."""
    baseline = _rss_mib()
    with server_process(bundle_size=SLOTS_PER_SUB) as url:
        delivered, elapsed = trio.run(batch, url, size)
    peak = _rss_mib()
    print(
        f"  {size:3d} sub-sessions: {delivered:6d} notifications in {elapsed:6.2f} s "
        f"= {delivered / elapsed:8.0f}/s; peak RSS {peak:6.1f} MiB, "
        f"{(peak - baseline) / size * 1024:7.1f} KiB per sub-session"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        one(int(sys.argv[2]))
        return
    print(f"parallel batches, {SLOTS_PER_SUB} slots per sub-session, all programs subscribed")
    for size in SIZES:
        subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_parallel", "--one", str(size)], check=True
        )


if __name__ == "__main__":
    main()
