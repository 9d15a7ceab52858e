"""Reconnect latency: from a lost data socket to the first new notification.

The firehose server drops every data-plane socket abruptly after a fixed number of
frames, so a managed session streaming through it reconnects hundreds of times; each
time it resubscribes from its cursor and skips the replayed duplicates. On the
client's clock, the latency of one reconnect runs from the moment the socket reported
itself lost to the moment the new socket carried the first notification not seen
before (after the replayed duplicates, which the client reads and drops first).

    python -m benchmarks.bench_reconnect [slots] [drop_every]

The client runs with ``reconnect_uptime_reset=0``: every drop of a connection that was
``Up`` opens a new failure window, so each reconnect is attempt 1, which the policy
makes immediate. (client.md's [revised] rule gives a drop after progress the same
treatment; until the client implements it, a default client climbs the backoff when a
link drops every few milliseconds, and this benchmark would measure the backoff.)
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
from typing import Any

import trio

from benchmarks._firehose import KEY, firehose_process
from trio_backtest import (
    ClientConfig,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)
from trio_backtest._connectors import default_connector
from trio_backtest._transport import Dead, WebSocket, connect

PROGRAM = "11111111111111111111111111111111"


class _Tracker:
    """What the client's data sockets have seen: signatures, and the pending drop."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.dropped_at: float | None = None
        self.latencies: list[float] = []
        self.drops = 0

    def frame(self, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else raw.decode()
        at = text.find(_MARK)
        if at < 0:
            return  # not a notification
        start = at + len(_MARK)
        signature = text[start : text.index('"', start)]
        if signature in self.seen:
            return  # a replayed duplicate
        self.seen.add(signature)
        if self.dropped_at is not None:
            self.latencies.append(time.perf_counter() - self.dropped_at)
            self.dropped_at = None


_MARK = '"signatures":["'


class _Watched(WebSocket):
    """A data-plane socket that reports its frames and its loss to a `_Tracker`."""

    def __init__(self, inner: WebSocket, tracker: _Tracker) -> None:
        self._inner = inner
        self._tracker = tracker

    async def receive(self) -> str | bytes:
        try:
            message = await self._inner.receive()
        except Dead:
            if self._tracker.dropped_at is None:
                self._tracker.dropped_at = time.perf_counter()
                self._tracker.drops += 1
            raise
        self._tracker.frame(message)
        return message

    async def send(self, message: str) -> None:
        await self._inner.send(message)

    async def ping(self, payload: bytes) -> None:
        await self._inner.ping(payload)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def abort(self) -> None:
        await self._inner.abort()


async def session(url: str, transport: str, slots: int) -> tuple[_Tracker, int, int]:
    """Stream ``slots`` slots; the tracker, notifications delivered, reconnects."""
    config = ClientConfig(transport=transport, reconnect_uptime_reset=0.0)  # type: ignore[arg-type]
    tracker = _Tracker()

    async def watching(nursery: trio.Nursery, target: str, **kwargs: Any) -> WebSocket:
        ws = await connect(default_connector(config), nursery, target, config, kwargs["headers"])
        return ws if target.endswith("/backtest") else _Watched(ws, tracker)

    delivered = 0
    create = CreateSession(start_slot=0, end_slot=slots - 1)
    async with open_backtest_session(url, KEY, create, config=config, connector=watching) as s:
        await s.subscribe_transactions([PROGRAM])
        async for event in s.events():
            if isinstance(event, Transaction):
                delivered += 1
            elif isinstance(event, ReadyForContinue):
                await s.send_continue(ContinueParams(advance_count=slots))
        reconnects = sum(s.statistics().reconnects.values())
    return tracker, delivered, reconnects


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    logging.getLogger("trio_backtest").addHandler(logging.NullHandler())  # one line per drop
    slots = int(sys.argv[1]) if len(sys.argv) > 1 else 800
    drop_every = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    print(f"{slots} slots, data socket dropped every {drop_every} frames, loopback TCP")
    print("  latency: socket lost -> first new notification on the new socket (client's clock)")
    print("  client: reconnect_uptime_reset=0, so every reconnect is attempt 1 (immediate)")
    with firehose_process(slots=slots, drop_every=drop_every) as url:
        for transport in ("trio-websocket", "websockets"):
            tracker, delivered, reconnects = trio.run(session, url, transport, slots)
            ms = [x * 1000 for x in tracker.latencies]
            print(
                f"  {transport:15}: {tracker.drops} drops, {reconnects} reconnects, "
                f"{delivered} delivered; median {statistics.median(ms):6.2f} ms, "
                f"p99 {_percentile(ms, 0.99):6.2f} ms, max {max(ms):6.2f} ms "
                "(targets: median < 20, p99 < 100)"
            )


if __name__ == "__main__":
    main()
