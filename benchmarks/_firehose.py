"""A firehose backtest server for the benchmarks: fast enough never to be the bottleneck.

It speaks the part of the protocol a managed session uses (create, continue, close,
attach and resume on the control socket; ``transactionSubscribe`` with
``replayFromSlot`` on the data plane; close 1000 after ``completed``) and nothing else.
It runs in its own process on asyncio. websockets' sans-I/O ``ServerProtocol`` does the
upgrade and reads the client's frames; notifications go out as WebSocket frames built
once at start-up (server frames are not masked) and written a slot at a time.

Every subscription of a data socket receives every transaction of each slot: the
``getTransaction``-shaped payloads the local server's runtime really produced (1-3 KB
each), captured once at start-up from an in-memory session.

    python -m benchmarks._firehose --slots 800 [--drop-every N]

prints its control URL on stdout and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import trio
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from benchmarks._server import child_server
from trio_backtest import (
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)
from trio_backtest.testing import open_memory_server

KEY = "bench-key"
HIGH_WATER = 1 << 20  # bytes buffered per socket before a writer waits


def _frame(payload: bytes) -> bytes:
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


async def _capture(seed: int, slots: int) -> list[list[bytes]]:
    """Every transaction notification of slots ``0..slots-1``, as the local server sent it."""
    payloads: list[list[bytes]] = [[] for _ in range(slots)]
    async with open_memory_server(seed=seed, record=False) as server:
        create = CreateSession(start_slot=0, slot_count=slots - 1)
        connector = server.connector()
        async with open_backtest_session(
            server.url, server.api_key, create, connector=connector
        ) as session:
            await session.subscribe_transactions(server.ledger.programs)
            async for event in session.events():
                if isinstance(event, ReadyForContinue):
                    await session.send_continue(ContinueParams(advance_count=slots))
                elif isinstance(event, Transaction):
                    payloads[event.slot].append(orjson.dumps(event.raw))
    return payloads


class Table:
    """Pre-framed notifications: per subscription id, per slot, one bytes blob."""

    def __init__(self, seed: int, slots: int) -> None:
        self._payloads = trio.run(_capture, seed, slots)
        self._blobs: dict[int, list[tuple[bytes, list[int]]]] = {}

    @property
    def slots(self) -> int:
        return len(self._payloads)

    def frames_in(self, slot: int) -> int:
        return len(self._payloads[slot])

    def blob(self, sid: int, slot: int) -> tuple[bytes, list[int]]:
        """Slot ``slot``'s frames for subscription ``sid``, and where each frame ends."""
        per_slot = self._blobs.get(sid)
        if per_slot is None:
            head = b'{"jsonrpc":"2.0","method":"transactionNotification","params":{"subscription":'
            prefix = head + str(sid).encode() + b',"result":'
            per_slot = []
            for payloads in self._payloads:
                frames = [_frame(prefix + p + b"}}") for p in payloads]
                ends, total = [], 0
                for f in frames:
                    total += len(f)
                    ends.append(total)
                per_slot.append((b"".join(frames), ends))
            self._blobs[sid] = per_slot
        return per_slot[slot]


class Session:
    """One backtest session: its position, its sockets, its sequenced history."""

    def __init__(self, server: Firehose, params: dict[str, Any]) -> None:
        self.server = server
        self.id = secrets.token_urlsafe(16)
        self.start = int(params["startSlot"])
        self.end = min(int(params["endSlot"]), server.table.slots - 1)
        self.position = self.start
        self.written = self.start - 1  # the last slot written to the data plane
        self.resumable = int(params.get("disconnectTimeoutSecs") or 0) > 0
        self.seq = 0
        self.history: list[bytes] = []
        self.ready = False
        self.completed = False
        self.control: Conn | None = None
        self.data: set[Conn] = set()
        self.running: asyncio.Task[None] | None = None

    def info(self) -> dict[str, str]:
        return {"sessionId": self.id, "rpcEndpoint": f"/backtest/{self.id}"}

    def say(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        if self.resumable:
            self.seq += 1
            message["seqId"] = self.seq
        encoded = orjson.dumps(message)
        if self.resumable:
            self.history.append(encoded)
        if self.control is not None:
            self.control.send_text(encoded)

    def go(self, count: int) -> None:
        if not self.ready or self.completed:
            self.say("error", {"InvalidRequest": {"error": "session is not ready"}})
            return
        self.ready = False
        self.running = asyncio.ensure_future(self._run(count))

    async def _run(self, count: int) -> None:
        for _ in range(count):
            slot = self.position
            for conn in list(self.data):
                conn.write_slot(slot)
            self.written = slot
            for conn in list(self.data):
                await conn.writable()
            await asyncio.sleep(0)  # let other sessions and sockets in
            if slot >= self.end:
                self.completed = True
                self.say("completed", {"summary": None, "agentStats": None})
                for conn in list(self.data):
                    conn.close(1000, "session completed")
                return
            self.position = slot + 1
            self.say("slotNotification", self.position)
        self.ready = True
        self.say("readyForContinue")


class Conn(asyncio.Protocol):
    """One WebSocket connection, control or data plane."""

    def __init__(self, server: Firehose) -> None:
        self.server = server
        self.ws = ServerProtocol(max_size=1 << 24)
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.plane = ""
        self.subscriptions: list[int] = []  # subscription ids of this socket
        self.frames_written = 0
        self.dropped = False
        self._writable: asyncio.Future[None] | None = None
        self._paused = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self.dropped:
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._upgrade(event)
            elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._message(orjson.loads(event.data))
        self._flush()

    def eof_received(self) -> bool | None:
        if self.dropped:
            return None  # close
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._detach()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # writing

    def _flush(self) -> None:
        assert self.transport is not None
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self.transport.close()

    def _usable(self) -> asyncio.Transport | None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.dropped:
            return None
        return transport

    def send_text(self, payload: bytes) -> None:
        if self._usable() is None:
            return
        self.ws.send_text(payload)
        self._flush()

    def close(self, code: int, reason: str) -> None:
        if self._usable() is None:
            return
        with contextlib.suppress(Exception):
            self.ws.send_close(code, reason)
            self._flush()
        # Do not wait long for the client's close frame.
        asyncio.get_running_loop().call_later(2.0, self.transport.close)

    async def writable(self) -> None:
        """Wait until the socket's buffer drains below its high-water mark."""
        while self._paused and self._usable() is not None:
            self._writable = asyncio.get_running_loop().create_future()
            await self._writable

    def write_slot(self, slot: int, sids: list[int] | None = None) -> None:
        """Write the notifications of ``slot`` (of every subscription, or of ``sids``).

        With ``--drop-every N``, the socket is lost abruptly once it carried N frames.
        """
        transport = self._usable()
        if transport is None:
            return
        every = self.server.drop_every
        for sid in self.subscriptions if sids is None else sids:
            blob, ends = self.server.table.blob(sid, slot)
            if every and self.frames_written + len(ends) >= every:
                keep = every - self.frames_written
                transport.write(blob[: ends[keep - 1]] if keep else b"")
                # Lost without a close frame, but after the frames already written
                # (an abort could discard them): the client sees an abnormal closure.
                transport.write_eof()
                self.dropped = True
                return
            transport.write(blob)
            self.frames_written += len(ends)

    # protocol

    def _upgrade(self, request: Request) -> None:
        path = request.path.rstrip("/")
        if path == "/backtest":
            if request.headers.get("X-API-Key") != self.server.key:
                self.ws.send_response(self.ws.reject(401, "unknown API key\n"))
                return
            self.plane = "control"
        elif path.startswith("/backtest/"):
            session = self.server.sessions.get(path.rsplit("/", 1)[1])
            if session is None:
                self.ws.send_response(self.ws.reject(404, "no such session\n"))
                return
            self.plane = "data"
            self.session = session
        else:
            self.ws.send_response(self.ws.reject(404, "not found\n"))
            return
        self.ws.send_response(self.ws.accept(request))

    def _message(self, message: Any) -> None:
        if self.plane == "control":
            self._control(message)
        elif self.plane == "data":
            self._data(message)

    def _control(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params")
        session = self.session
        if method == "createBacktestSession":
            session = Session(self.server, params)
            self.server.sessions[session.id] = session
            self.session, session.control = session, self
            session.say("sessionCreated", session.info())
            session.say("slotNotification", session.start)
            session.ready = True
            session.say("readyForContinue")
        elif session is None and method == "attachBacktestSession":
            session = self.server.sessions.get(params.get("session_id"))
            if session is None:
                error = {"SessionNotFound": {"session_id": params.get("session_id")}}
                self.send_text(orjson.dumps({"method": "error", "params": error}))
                return
            self.session, session.control = session, self
            attached = {"method": "sessionAttached", "params": session.info()}
            self.send_text(orjson.dumps(attached))
            last = params.get("last_sequence") or 0
            for encoded in session.history[last:]:
                self.send_text(encoded)
        elif session is None:
            return
        elif method == "continue":
            session.go(int((params or {}).get("advanceCount", 1)))
        elif method == "resumeAttachedSession":
            self.send_text(b'{"method":"success"}')
            if session.ready:
                session.say("readyForContinue")
        elif method == "closeBacktestSession":
            self.send_text(b'{"method":"success"}')
            self.server.forget(session)

    def _data(self, message: dict[str, Any]) -> None:
        assert self.session is not None
        method, rid = message.get("method"), message.get("id")
        if method == "transactionSubscribe":
            sid = len(self.subscriptions) + 1
            config = (message.get("params") or [None, {}])[1] or {}
            replay = config.get("replayFromSlot")
            answer = {"jsonrpc": "2.0", "id": rid, "result": sid}
            self.send_text(orjson.dumps(answer))
            self.subscriptions.append(sid)
            if replay is not None:
                for slot in range(max(int(replay), self.session.start), self.session.written + 1):
                    self.write_slot(slot, [sid])
            self.session.data.add(self)
            if self.session.completed:
                self.close(1000, "session completed")
        else:
            error = {"code": -32601, "message": "method not found"}
            self.send_text(orjson.dumps({"jsonrpc": "2.0", "id": rid, "error": error}))

    def _detach(self) -> None:
        session = self.session
        if session is None:
            return
        session.data.discard(self)
        if session.control is self:
            session.control = None
            if not session.resumable:
                self.server.forget(session)


class Firehose:
    """The server: its table of frames and its sessions."""

    def __init__(self, table: Table, key: str, drop_every: int) -> None:
        self.table = table
        self.key = key
        self.drop_every = drop_every
        self.sessions: dict[str, Session] = {}

    def forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        if session.running is not None:
            session.running.cancel()
        for conn in [session.control, *session.data]:
            if conn is not None:
                conn.close(1000, "session closed")


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    table = Table(args.seed, args.slots)
    table.blob(1, 0)  # frame the first subscription's notifications now, not on first use
    firehose = Firehose(table, KEY, args.drop_every)
    server = await loop.create_server(lambda: Conn(firehose), "127.0.0.1", 0, backlog=2048)
    port = server.sockets[0].getsockname()[1]
    print(f"ws://127.0.0.1:{port}/backtest", flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=800, help="slots in the table")
    parser.add_argument("--seed", type=int, default=1, help="seed of the ledger")
    parser.add_argument("--drop-every", type=int, default=0, help="lose data sockets at N frames")
    asyncio.run(_serve(parser.parse_args()))


@contextlib.contextmanager
def firehose_process(slots: int = 800, drop_every: int = 0) -> Iterator[str]:
    """Start the firehose in a child process; yield its control URL."""
    arguments = ["-m", "benchmarks._firehose", "--slots", str(slots)]
    with child_server([*arguments, "--drop-every", str(drop_every)]) as url:
        yield url


if __name__ == "__main__":
    main()
