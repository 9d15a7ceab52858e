"""Notifications per second through a managed session, next to a bare WebSocket loop.

Both read the same stream (every transaction of every program over the same slots)
from a local server running in a separate process, over loopback TCP.

    python benchmarks/bench_session.py [slots]
"""

from __future__ import annotations

import sys
import time

import trio
import trio_websocket

from benchmarks._server import KEY, server_process
from trio_backtest import (
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)
from trio_backtest.protocol import (
    Completed,
    Continue,
    CreateBacktestSession,
    SessionCreated,
    TransactionSubscribe,
    decode_control,
    encode_control,
    encode_rpc,
)
from trio_backtest.protocol import (
    ReadyForContinue as ReadyMessage,
)
from trio_backtest.server import Ledger, LedgerConfig

PROGRAMS = Ledger(LedgerConfig(seed=1)).programs


async def bare(url: str, slots: int) -> tuple[int, float]:
    """A plain trio-websocket client: create, subscribe, one continue, count frames."""
    create = CreateSession(start_slot=0, slot_count=slots - 1)
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[(b"X-API-Key", KEY.encode())]
    ) as control:
        await control.send_message(encode_control(CreateBacktestSession(create)))
        rpc = ""
        while True:
            message = decode_control(await control.get_message()).message
            if isinstance(message, SessionCreated):
                rpc = url.rsplit("/backtest", 1)[0] + message.rpc_endpoint
            if isinstance(message, ReadyMessage):
                break
        async with trio_websocket.open_websocket_url(rpc, max_message_size=1 << 24) as data:
            for n, program in enumerate(PROGRAMS, start=1):
                await data.send_message(encode_rpc(TransactionSubscribe(n, program)))
            acks = 0
            while acks < len(PROGRAMS):
                await data.get_message()
                acks += 1
            began = time.perf_counter()
            await control.send_message(encode_control(Continue(ContinueParams(slots))))
            count = 0
            try:
                while True:
                    await data.get_message()
                    count += 1
            except trio_websocket.ConnectionClosed:
                pass
            elapsed = time.perf_counter() - began
        while not isinstance(decode_control(await control.get_message()).message, Completed):
            pass
    return count, elapsed


async def managed(url: str, slots: int) -> tuple[int, int, float]:
    """The managed session: the same stream, de-duplicated, as events."""
    create = CreateSession(start_slot=0, slot_count=slots - 1)
    async with open_backtest_session(url, KEY, create) as session:
        await session.subscribe_transactions(PROGRAMS)
        delivered = 0
        began = 0.0
        async for event in session.events():
            if isinstance(event, ReadyForContinue):
                began = time.perf_counter()
                await session.send_continue(ContinueParams(advance_count=slots))
            elif isinstance(event, Transaction):
                delivered += 1
        elapsed = time.perf_counter() - began
        frames = session.statistics().messages_received
    return delivered, frames, elapsed


def main() -> None:
    slots = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with server_process() as url:
        frames, bare_time = trio.run(bare, url, slots)
        delivered, managed_frames, managed_time = trio.run(managed, url, slots)
    bare_rate = frames / bare_time
    managed_rate = managed_frames / managed_time
    print(f"{slots} slots, {len(PROGRAMS)} transaction subscriptions, server in another process")
    rows = [
        ("bare trio-websocket loop", frames, bare_time, bare_rate, ""),
        ("managed session", managed_frames, managed_time, managed_rate, f" ({delivered} unique)"),
    ]
    for name, count, took, rate, extra in rows:
        print(f"  {name:25}: {count:7d} frames in {took:6.2f} s = {rate:9.0f}/s{extra}")
    print(f"  {'managed / bare':25}: {managed_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
