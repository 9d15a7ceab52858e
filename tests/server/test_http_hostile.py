"""No client behaviour puts a traceback in the server's log, over real TCP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import trio

from tests.conftest import SECRET_KEY
from tests.server.wire import raw_http
from trio_backtest.server import LocalServer, ServerConfig, open_server

_TIMEOUT = 0.5  # real time: long enough for an answer on a loaded machine


@pytest.fixture
async def quick_server() -> AsyncIterator[LocalServer]:
    """A server that waits only ``_TIMEOUT`` s for a request head or body."""
    config = ServerConfig(api_keys=(SECRET_KEY,), handshake_timeout=_TIMEOUT)
    async with open_server(config) as server:
        yield server


async def _exchange(server: LocalServer, data: bytes, *, close_after: bool = False) -> bytes:
    return await raw_http(server.url, data, close_after=close_after)


_POST = b"POST /backtest/some-session HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize(
    ("name", "data", "close_after", "answer"),
    [
        ("silent connection", b"", False, b""),
        ("garbage bytes", b"\x16\x03\x01\x00\xff garbage\r\n\r\n", False, b"HTTP/1.1 400 "),
        ("half a request head, then silence", b"GET /health HTTP/1.1\r\nHo", False, b""),
        ("half a request head, then gone", b"GET /health HTTP/1.1\r\nHo", True, b""),
        (
            "a huge head",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n",
            False,
            b"HTTP/1.1 431 ",
        ),
        (
            "a bad Content-Length",
            _POST + b"Content-Length: lots\r\n\r\n{}",
            False,
            b"HTTP/1.1 400 ",
        ),
        ("a body that never arrives", _POST + b"Content-Length: 100\r\n\r\n{", False, b""),
        ("a connection dropped mid-body", _POST + b"Content-Length: 100\r\n\r\n{", True, b""),
        (
            "a broken upgrade",
            b"GET /backtest HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n",
            False,
            b"HTTP/1.1 ",
        ),
    ],
)
async def test_hostile_connections_leave_no_error_in_the_log(
    quick_server: LocalServer,
    caplog: pytest.LogCaptureFixture,
    name: str,
    data: bytes,
    close_after: bool,
    answer: bytes,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_backtest")
    got = await _exchange(quick_server, data, close_after=close_after)
    assert got.startswith(answer), name
    if close_after:
        await trio.sleep(2 * _TIMEOUT)  # let the server notice
    ok = await _exchange(quick_server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], name
