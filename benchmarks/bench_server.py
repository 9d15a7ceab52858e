"""The local server's own figures: runtime throughput and memory under many sessions.

* executed transactions per second of the runtime, per core (CPU time of one process
  executing fresh slots of the synthetic ledger: plan, execution and notification JSON);
* the server's resident memory with 1,000 concurrent sessions that stream (each with a
  transaction subscription, ten slots each, spread over ten bundles);
* the server's resident memory with one parallel batch of 64 sub-sessions.

The server runs in a child process; its memory is read from ``/proc`` (peak resident set,
``VmHWM``) so client memory does not count.

    python -m benchmarks.bench_server
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import trio
import trio_websocket

from benchmarks._server import KEY, server_child
from trio_backtest.server import Ledger, LedgerConfig
from trio_backtest.server._chain import References
from trio_backtest.server._runtime import Engine

SESSIONS = 1_000
BUNDLES = 10
SLOTS = 10
BATCH = 64


def _memory_mib(pid: int) -> tuple[float, float]:
    """``(current, peak)`` resident set of ``pid`` in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def throughput() -> None:
    """Execute fresh slots in this process and print transactions per CPU second."""
    ledger = Ledger(LedgerConfig(seed=3))
    references = References(ledger, Engine(ledger), cache_slots=32)
    reference = references.acquire(0, frozenset())
    began = time.process_time()
    executed = 0
    for slot in range(300):
        for done in reference.run(slot).executed:
            executed += 1
            done.raw  # noqa: B018 - the notification JSON is part of the work
    cpu = time.process_time() - began
    print(
        f"runtime: {executed} transactions in {cpu:.2f} s of CPU = "
        f"{executed / cpu:,.0f} executed transactions/s per core (plan + execution + JSON)"
    )


async def _stream(url: str, start: int, program: str, ready: trio.Event, go: trio.Event) -> int:
    async with trio_websocket.open_websocket_url(url, extra_headers=[("X-API-Key", KEY)]) as ws:
        create = {"startSlot": start, "endSlot": start + SLOTS - 1}
        await ws.send_message(orjson.dumps({"method": "createBacktestSession", "params": create}))
        created = orjson.loads(await ws.get_message())
        endpoint = created["params"]["rpcEndpoint"]
        while orjson.loads(await ws.get_message()).get("method") != "readyForContinue":
            pass
        data_url = url.rsplit("/backtest", 1)[0] + endpoint
        async with trio_websocket.open_websocket_url(data_url) as data:
            request = {"jsonrpc": "2.0", "id": 1, "method": "transactionSubscribe"}
            await data.send_message(orjson.dumps({**request, "params": [program, {}]}))
            await data.get_message()
            ready.set()
            await go.wait()
            await ws.send_message(b'{"method":"continue","params":{"advanceCount":%d}}' % SLOTS)
            received = 0
            try:
                while True:
                    await data.get_message()
                    received += 1
            except trio_websocket.ConnectionClosed:
                return received


async def _many(url: str, pid: int) -> None:
    program = Ledger(LedgerConfig(seed=1)).programs[2]  # the memo program
    readies = [trio.Event() for _ in range(SESSIONS)]
    go = trio.Event()
    totals: list[int] = []
    idle, _ = _memory_mib(pid)

    async def one(index: int) -> None:
        start = 1_000 + (index % BUNDLES) * 100 + 5
        totals.append(await _stream(url, start, program, readies[index], go))

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(SESSIONS):
            nursery.start_soon(one, index)
        for ready in readies:
            await ready.wait()
        created = time.perf_counter() - began
        before, _ = _memory_mib(pid)
        go.set()
    elapsed = time.perf_counter() - began - created
    _, peak = _memory_mib(pid)
    print(
        f"{SESSIONS} streaming sessions ({BUNDLES} bundles, {SLOTS} slots each): created and "
        f"subscribed in {created:.1f} s, streamed {sum(totals)} notifications in "
        f"{elapsed:.1f} s; server RSS idle {idle:.0f} MiB, all sessions open "
        f"{before:.0f} MiB, peak {peak:.0f} MiB ({(peak - idle) * 1024 / SESSIONS:.0f} KiB "
        "per session)"
    )


async def _batch(url: str, pid: int) -> None:
    idle, _ = _memory_mib(pid)
    create = {
        "startSlot": 0,
        "endSlot": BATCH * SLOTS - 1,
        "disconnectTimeoutSecs": 60,
        "parallel": True,
    }
    async with trio_websocket.open_websocket_url(url, extra_headers=[("X-API-Key", KEY)]) as ws:
        await ws.send_message(orjson.dumps({"method": "createBacktestSession", "params": create}))
        waiting: set[str] = set()
        completed = 0
        began = time.perf_counter()
        while completed < BATCH:
            message = orjson.loads(await ws.get_message())
            method = message.get("method")
            if method == "sessionsCreatedV2":
                waiting = set(message["params"]["sessionIds"])
            elif method == "sessionEventV2":
                event = message["params"]["event"]["method"]
                session_id = message["params"]["sessionId"]
                if event == "readyForContinue":
                    params = {"sessionId": session_id, "params": {"advanceCount": SLOTS}}
                    await ws.send_message(
                        orjson.dumps({"method": "continueSessionV1", "params": params})
                    )
                elif event == "completed":
                    completed += 1
                    waiting.discard(session_id)
        elapsed = time.perf_counter() - began
        current, peak = _memory_mib(pid)
    print(
        f"parallel batch of {BATCH} sub-sessions ({SLOTS} slots each, every bundle its own "
        f"world): ran in {elapsed:.1f} s; server RSS idle {idle:.0f} MiB, after "
        f"{current:.0f} MiB, peak {peak:.0f} MiB"
    )


def main() -> None:
    throughput()
    with server_child(bundle_size=100, max_sessions_per_key=100_000) as (url, pid):
        trio.run(_many, url, pid)
    with server_child(bundle_size=SLOTS) as (url, pid):
        trio.run(_batch, url, pid)


if __name__ == "__main__":
    main()
