"""An in-memory byte pipe with a bounded buffer, so back-pressure behaves like TCP.

``trio.testing.memory_stream_pair`` buffers without limit: a writer never waits, and a
client that stops reading would never slow the server down. Here each direction holds at
most ``capacity`` bytes; ``send_all`` waits for room the way a full socket buffer does.
"""

from __future__ import annotations

import operator
from typing import final

import trio

__all__ = ["MemoryPipeStream", "memory_pipe_pair"]

#: Bytes one direction buffers: about what a loopback socket buffers in each direction.
DEFAULT_CAPACITY = 64 * 1024


@final
class _Pipe:
    """One direction: a byte buffer shared by a sending and a receiving end."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.send_closed = False
        self.receive_closed = False
        self.readable = trio.lowlevel.ParkingLot()
        self.writable = trio.lowlevel.ParkingLot()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.send_closed:
            raise trio.ClosedResourceError("this end was closed")
        await trio.lowlevel.checkpoint()
        view = memoryview(data).cast("B")
        while view:
            if self.send_closed:
                raise trio.ClosedResourceError("this end was closed")
            if self.receive_closed:
                raise trio.BrokenResourceError("the receiving end was closed")
            room = self.capacity - len(self.buffer)
            if room <= 0:
                await self.writable.park()
                continue
            self.buffer += view[:room]
            view = view[room:]
            self.readable.unpark_all()

    async def wait_writable(self) -> None:
        if self.send_closed:
            raise trio.ClosedResourceError("this end was closed")
        while (
            not self.send_closed and not self.receive_closed and len(self.buffer) >= self.capacity
        ):
            await self.writable.park()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None) -> bytes:
        if self.receive_closed:
            raise trio.ClosedResourceError("this end was closed")
        await trio.lowlevel.checkpoint()
        while not self.buffer:
            if self.send_closed:
                return b""
            await self.readable.park()
            if self.receive_closed:
                raise trio.ClosedResourceError("this end was closed")
        size = len(self.buffer) if max_bytes is None else min(max_bytes, len(self.buffer))
        chunk = bytes(self.buffer[:size])
        del self.buffer[:size]
        self.writable.unpark_all()
        return chunk

    def close_send(self) -> None:
        self.send_closed = True
        self.readable.unpark_all()
        self.writable.unpark_all()

    def close_receive(self) -> None:
        self.receive_closed = True
        self.buffer.clear()
        self.readable.unpark_all()
        self.writable.unpark_all()


@final
class MemoryPipeStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection: sends into one pipe, receives from the other."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._outgoing = outgoing
        self._incoming = incoming
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, waiting while the peer's buffer is full."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self._outgoing.send_all(data)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the peer's buffer has room."""
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        self._sending = True
        try:
            await self._outgoing.wait_writable()
        finally:
            self._sending = False

    async def send_eof(self) -> None:
        """Close the sending direction; the peer reads end-of-file."""
        self._outgoing.close_send()
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Receive what the peer sent, or ``b""`` once it closed its sending direction."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        self._receiving = True
        try:
            return await self._incoming.receive_some(max_bytes)
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Close both directions (the peer's sends then fail, as after a TCP reset)."""
        self._outgoing.close_send()
        self._incoming.close_receive()
        await trio.lowlevel.checkpoint()


def memory_pipe_pair(
    capacity: int = DEFAULT_CAPACITY,
) -> tuple[MemoryPipeStream, MemoryPipeStream]:
    """Two connected stream ends whose directions each buffer at most ``capacity`` bytes."""
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    one, two = _Pipe(capacity), _Pipe(capacity)
    return MemoryPipeStream(one, two), MemoryPipeStream(two, one)
