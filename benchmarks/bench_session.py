"""CPU per notification of the client: bare WebSocket loops and the managed session.

A firehose server in its own process streams the same transactions (1-3 KB each, one
subscription) to each client in turn: a bare trio-websocket loop and a bare websockets
17 Trio loop (connect, receive, ``orjson.loads``), then a managed session on each
connector. The clients run interleaved (A B C D, A B C D, ...) and each run measures the
client process's CPU time (``time.process_time``) from the continue to the last
notification. A raw socket reader that only counts frames shows the server's ceiling.

    python -m benchmarks.bench_session [rounds] [slots]

Also writes ``docs/figures/cpu_per_notification.png`` when matplotlib is installed.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import trio
import trio_websocket
import websockets.trio.client
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri

from benchmarks._firehose import KEY, firehose_process
from trio_backtest import (
    ClientConfig,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)

PROGRAM = "11111111111111111111111111111111"
PLOT = Path(__file__).resolve().parent.parent / "docs" / "figures" / "cpu_per_notification.png"


class Run:
    """What one client run measured."""

    def __init__(self, count: int, cpu: float, wall: float) -> None:
        self.count = count
        self.cpu = cpu
        self.wall = wall

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.count * 1e6


def _create(slots: int) -> bytes:
    params = {"startSlot": 0, "endSlot": slots - 1}
    return orjson.dumps({"method": "createBacktestSession", "params": params})


def _subscribe() -> bytes:
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "transactionSubscribe", "params": [PROGRAM, {}]}
    )


def _continue(slots: int) -> bytes:
    return orjson.dumps({"method": "continue", "params": {"advanceCount": slots}})


def _data_url(url: str, message: dict[str, object]) -> str:
    params = message["params"]
    assert isinstance(params, dict)
    return url.rsplit("/backtest", 1)[0] + str(params["rpcEndpoint"])


async def bare_trio_websocket(url: str, slots: int, receive_buffer_size: int = 4096) -> Run:
    """A bare trio-websocket loop: create, subscribe, continue, receive and parse.

    ``receive_buffer_size`` is trio-websocket's read size: its default, 4 KiB, unless a
    row says otherwise (the managed session reads 64 KiB at a time).
    """
    headers = [(b"X-API-Key", KEY.encode())]
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as control:
        await control.send_message(_create(slots))
        created = orjson.loads(await control.get_message())
        while orjson.loads(await control.get_message())["method"] != "readyForContinue":
            pass
        data_url = _data_url(url, created)
        async with trio_websocket.open_websocket_url(
            data_url, max_message_size=1 << 24, receive_buffer_size=receive_buffer_size
        ) as data:
            await data.send_message(_subscribe())
            await data.get_message()
            began, cpu = time.perf_counter(), time.process_time()
            await control.send_message(_continue(slots))
            count = 0
            try:
                while True:
                    orjson.loads(await data.get_message())
                    count += 1
            except trio_websocket.ConnectionClosed:
                pass
            run = Run(count, time.process_time() - cpu, time.perf_counter() - began)
        while orjson.loads(await control.get_message())["method"] != "completed":
            pass
    return run


async def bare_websockets(url: str, slots: int) -> Run:
    """A bare websockets 17 Trio loop: create, subscribe, continue, receive and parse."""
    connect = websockets.trio.client.connect
    async with connect(url, additional_headers={"X-API-Key": KEY}, compression=None) as control:
        await control.send(_create(slots), text=True)
        created = orjson.loads(await control.recv())
        while orjson.loads(await control.recv())["method"] != "readyForContinue":
            pass
        data_url = _data_url(url, created)
        async with connect(data_url, compression=None, max_size=1 << 24) as data:
            await data.send(_subscribe(), text=True)
            await data.recv()
            began, cpu = time.perf_counter(), time.process_time()
            await control.send(_continue(slots), text=True)
            count = 0
            try:
                while True:
                    orjson.loads(await data.recv())
                    count += 1
            except websockets.exceptions.ConnectionClosed:
                pass
            run = Run(count, time.process_time() - cpu, time.perf_counter() - began)
        # Read the control socket to the end: websockets cannot close a connection
        # whose unread messages paused its reader.
        while orjson.loads(await control.recv())["method"] != "completed":
            pass
    return run


def managed(transport: str) -> Callable[[str, int], Awaitable[Run]]:
    """The managed session on ``transport``: de-duplicated, ordered events."""

    async def run(url: str, slots: int) -> Run:
        create = CreateSession(start_slot=0, end_slot=slots - 1)
        config = ClientConfig(transport=transport)  # type: ignore[arg-type]
        count, began, cpu = 0, 0.0, 0.0
        async with open_backtest_session(url, KEY, create, config=config) as session:
            await session.subscribe_transactions([PROGRAM])
            async for event in session.events():
                if isinstance(event, Transaction):
                    count += 1
                elif isinstance(event, ReadyForContinue):
                    began, cpu = time.perf_counter(), time.process_time()
                    await session.send_continue(ContinueParams(advance_count=slots))
            return Run(count, time.process_time() - cpu, time.perf_counter() - began)

    return run


class _RawSocket:
    """A blocking WebSocket client on websockets' sans-I/O protocol, for the ceiling."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port))
        self.protocol = ClientProtocol(parse_uri(url), max_size=1 << 24)
        request = self.protocol.connect()
        request.headers.update(headers)
        self.protocol.send_request(request)
        self._flush()
        self._pending: list[object] = []
        response = self._next()
        assert isinstance(response, Response)
        assert response.status_code == 101

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            self.sock.sendall(chunk)

    def _next(self) -> object:
        while not self._pending:
            self.protocol.receive_data(self.sock.recv(1 << 16))
            self._pending += self.protocol.events_received()
        return self._pending.pop(0)

    def send(self, payload: bytes) -> None:
        self.protocol.send_text(payload)
        self._flush()

    def receive(self) -> dict[str, object]:
        return orjson.loads(self._next().data)  # type: ignore[attr-defined, no-any-return]

    def count_frames(self) -> int:
        """Read raw bytes until a close frame, counting the frames' headers only."""
        buffer, count, at = bytearray(), 0, 0
        while True:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return count
            buffer += chunk
            while len(buffer) - at >= 2:
                opcode, size = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
                head = 2
                if size == 126:
                    head, size = 4, int.from_bytes(buffer[at + 2 : at + 4], "big")
                elif size == 127:
                    head, size = 10, int.from_bytes(buffer[at + 2 : at + 10], "big")
                if len(buffer) - at < head + size:
                    break
                if opcode == 0x8:
                    return count
                count += 1
                at += head + size
            del buffer[:at]
            at = 0


def ceiling(url: str, slots: int) -> Run:
    """The server's ceiling: frames per second to a reader that parses nothing."""
    control = _RawSocket(url, {"X-API-Key": KEY})
    control.send(_create(slots))
    created = control.receive()
    data = _RawSocket(_data_url(url, created), {})
    data.send(_subscribe())
    data.receive()
    began, cpu = time.perf_counter(), time.process_time()
    control.send(_continue(slots))
    count = data.count_frames()
    run = Run(count, time.process_time() - cpu, time.perf_counter() - began)
    for raw in (control, data):
        raw.sock.close()
    return run


async def bare_trio_websocket_64k(url: str, slots: int) -> Run:
    """The bare trio-websocket loop reading 64 KiB at a time, as the managed session does."""
    return await bare_trio_websocket(url, slots, receive_buffer_size=64 * 1024)


CLIENTS: dict[str, Callable[[str, int], Awaitable[Run]]] = {
    "bare trio-websocket": bare_trio_websocket,
    "bare trio-websocket 64K": bare_trio_websocket_64k,
    "bare websockets": bare_websockets,
    "managed, trio-websocket": managed("trio-websocket"),
    "managed, websockets": managed("websockets"),
}


def plot(medians: dict[str, float], spreads: dict[str, tuple[float, float]]) -> str:
    """Save a bar chart of CPU per notification; say where, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install -e '.[docs]')"
    names = list(medians)
    low = [medians[n] - spreads[n][0] for n in names]
    high = [spreads[n][1] - medians[n] for n in names]
    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=110)
    bars = axes.barh(names, [medians[n] for n in names], xerr=[low, high], color="#4c72b0")
    axes.bar_label(bars, fmt="%.1f", padding=8)
    axes.set_xlim(0, 1.18 * max(spreads[n][1] for n in names))
    axes.axvline(
        40, color="#c44e52", linestyle="--", linewidth=1, label="target, managed on websockets"
    )
    axes.legend(loc="lower right", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("client CPU µs per notification (median, min-max)")
    axes.set_title("CPU per transaction notification, server in another process", fontsize=10)
    figure.tight_layout()
    figure.savefig(PLOT)
    plt.close(figure)
    return f"plot: {PLOT.relative_to(PLOT.parent.parent.parent)}"


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    slots = int(sys.argv[2]) if len(sys.argv) > 2 else 800
    runs: dict[str, list[Run]] = {name: [] for name in CLIENTS}
    with firehose_process(slots=slots) as url:
        tops = [ceiling(url, slots) for _ in range(5)]
        for _ in range(rounds):
            for name, client in CLIENTS.items():
                runs[name].append(trio.run(client, url, slots))
    counts = {run.count for rs in runs.values() for run in rs}
    print(f"{slots} slots, one transaction subscription, {rounds} interleaved rounds")
    print(f"notifications per run: {sorted(counts)}; server in another process, loopback TCP")
    rates = [top.count / top.wall for top in tops]
    print(
        f"  server ceiling (a raw reader counting {tops[0].count} frames, 5 runs): "
        f"median {statistics.median(rates):,.0f} frames/s, best {max(rates):,.0f}"
    )
    columns = ("CPU us/notif", "min", "max", "notif/s", "per core")
    print(
        f"  {'client':25} {columns[0]:>12} {columns[1]:>6} {columns[2]:>6} "
        f"{columns[3]:>9} {columns[4]:>9}"
    )
    medians: dict[str, float] = {}
    spreads: dict[str, tuple[float, float]] = {}
    for name, rs in runs.items():
        cpu = [r.cpu_us for r in rs]
        medians[name] = statistics.median(cpu)
        spreads[name] = (min(cpu), max(cpu))
        rate = statistics.median(r.count / r.wall for r in rs)
        print(
            f"  {name:25} {medians[name]:12.1f} {min(cpu):6.1f} {max(cpu):6.1f} "
            f"{rate:9,.0f} {1e6 / medians[name]:9,.0f}"
        )
    ratios = [
        ("managed / bare, trio-websocket", "managed, trio-websocket", "bare trio-websocket", 1.1),
        (
            "managed / bare 64K, trio-websocket",
            "managed, trio-websocket",
            "bare trio-websocket 64K",
            None,
        ),
        ("managed / bare, websockets", "managed, websockets", "bare websockets", 1.1),
        ("managed websockets / managed tw", "managed, websockets", "managed, trio-websocket", None),
    ]
    for label, over, under, target in ratios:
        note = f" (target <= {target})" if target else ""
        print(f"  {label:32}: {medians[over] / medians[under]:.2f}{note}")
    best = medians["managed, websockets"]
    print(f"  managed on websockets, CPU us per notification: {best:.1f} (target <= 40)")
    print(f"  {plot(medians, spreads)}")


if __name__ == "__main__":
    main()
