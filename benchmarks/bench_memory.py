"""Memory per session: 1,000 concurrent sessions in one client process.

Each session is opened with one transaction subscription against the firehose server
in another process, all at once; once every one is up they are all closed. The client
process's resident memory (current RSS, not the peak) is read before, with every
session open, and after they all closed. Each connector runs in a fresh child process.

    python -m benchmarks.bench_memory [sessions]
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import trio

from benchmarks._firehose import KEY, firehose_process
from trio_backtest import ClientConfig, CreateSession, open_backtest_session

PROGRAM = "11111111111111111111111111111111"
TRANSPORTS = ("trio-websocket", "websockets")


def _rss_kib() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 1024


async def crowd(url: str, transport: str, count: int) -> tuple[float, float, float]:
    """Open ``count`` sessions at once, then close them; seconds to open, RSS open, RSS after."""
    config = ClientConfig(transport=transport)  # type: ignore[arg-type]
    create = CreateSession(start_slot=0, end_slot=10)
    opened = 0
    all_open, close = trio.Event(), trio.Event()

    async def one() -> None:
        nonlocal opened
        async with open_backtest_session(url, KEY, create, config=config) as session:
            await session.subscribe_transactions([PROGRAM])
            opened += 1
            if opened == count:
                all_open.set()
            await close.wait()

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
        await all_open.wait()
        took = time.perf_counter() - began
        gc.collect()
        at_open = _rss_kib()
        close.set()
    gc.collect()
    return took, at_open, _rss_kib()


def one(transport: str, count: int, url: str) -> None:
    """Measure one connector in this process and print one line."""
    trio.run(trio.sleep, 0)  # Trio's own start-up is part of the baseline
    gc.collect()
    baseline = _rss_kib()
    took, at_open, after = trio.run(crowd, url, transport, count)
    print(
        f"  {transport:15}: {count} sessions open in {took:5.2f} s; RSS "
        f"{(at_open - baseline) / count:6.1f} KiB per session open, "
        f"{(after - baseline) / count:5.1f} KiB per session left after closing "
        f"(baseline {baseline / 1024:.0f} MiB)"
    )


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        one(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(f"{count} concurrent sessions, one transaction subscription each, one process")
    print("  targets: <= 100 KiB resident per session, all open in < 1 s")
    with firehose_process(slots=20) as url:
        for transport in TRANSPORTS:
            command = [sys.executable, "-m", "benchmarks.bench_memory", "--one", transport]
            result = subprocess.run(
                [*command, str(count), url], capture_output=True, text=True, check=True
            )
            print(result.stdout.rstrip())


if __name__ == "__main__":
    main()
