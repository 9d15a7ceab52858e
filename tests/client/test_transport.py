"""The connector seam over real loopback TCP: every failure of the HTTP upgrade is a
failed connect, retried per the policy and reported as the documented error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from tests.conftest import SECRET_KEY
from tests.reliability.fakes import FakeConnection, control, open_fake_server
from trio_backtest import (
    CauseKind,
    ClientConfig,
    CreateSession,
    Reconnecting,
    SessionCreateError,
    SubscriptionFailedError,
    open_backtest_session,
)
from trio_backtest._transport import Dead, connect, websocket_connector

#: Real sockets mean real time: a generous bound on each test, never asserted as a duration.
BOUND = 20.0
#: Two quick retries: the same policy, only faster.
FAST = ClientConfig(
    reconnect_max_attempts=2,
    reconnect_initial_backoff=0.01,
    reconnect_max_backoff=0.01,
    connect_timeout=BOUND,
)
_ACCEPT = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"

ANSWERS = {
    "garbage status line": b"HTTP/1.1 ABC what\r\n\r\n",
    "not HTTP": b"\x00\x01\x02 hello\r\n\r\n",
    "wrong Sec-WebSocket-Accept": _ACCEPT
    + b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
    "101 without Sec-WebSocket-Accept": _ACCEPT + b"\r\n",
    "the connection closed": None,
}


@asynccontextmanager
async def open_raw_server(answer: bytes | None) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback listener answering every upgrade request with ``answer`` (``None``:
    close without one); yields its ``ws://`` URL and a list counting connections."""
    accepted: list[int] = []

    async def handler(stream: trio.SocketStream) -> None:
        accepted.append(1)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some()
            if not chunk:
                return
            request += chunk
        if answer is not None:
            await stream.send_all(answer)
        await stream.aclose()

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handler, [listener])
        yield f"ws://127.0.0.1:{port}/backtest", accepted
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
async def test_a_failed_upgrade_is_a_failed_connect(answer: bytes | None) -> None:
    with trio.fail_after(BOUND):
        async with open_raw_server(answer) as (url, _), trio.open_nursery() as nursery:
            with pytest.raises(Dead) as info:
                await connect(websocket_connector, nursery, url, FAST, headers=[])
    assert info.value.cause.kind is CauseKind.CONNECT_FAILED
    assert info.value.cause.detail.startswith("upgrade failed: ")


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
async def test_a_failed_upgrade_of_the_control_socket_fails_the_create_after_retries(
    answer: bytes | None,
) -> None:
    create = CreateSession(start_slot=0, slot_count=1)
    with trio.fail_after(BOUND):
        async with open_raw_server(answer) as (url, accepted):
            with pytest.raises(SessionCreateError, match="gave up after 2 reconnect attempts"):
                async with open_backtest_session(url, SECRET_KEY, create, config=FAST):
                    pytest.fail("the create cannot succeed")  # pragma: no cover
    assert len(accepted) == 1 + 2


async def test_a_failed_upgrade_of_the_data_plane_fails_the_subscription_after_retries() -> None:
    create = CreateSession(start_slot=10, slot_count=5)
    with trio.fail_after(BOUND):
        async with open_raw_server(ANSWERS["garbage status line"]) as (raw_url, accepted):

            async def script(conn: FakeConnection) -> None:
                await conn.expect("createBacktestSession")
                created = {"sessionId": "s", "rpcEndpoint": raw_url + "/s"}
                await conn.send(control("sessionCreated", created))

            async with open_fake_server(script) as fake:

                async def connector(
                    nursery: trio.Nursery, url: str, **kwargs: Any
                ) -> WebSocketConnection:
                    if url.startswith(raw_url + "/"):
                        return await websocket_connector(nursery, url, **kwargs)
                    return await fake(nursery, url, **kwargs)

                async with open_backtest_session(
                    "ws://localhost:9/backtest",
                    SECRET_KEY,
                    create,
                    config=FAST,
                    connector=connector,
                ) as session:
                    with pytest.raises(SubscriptionFailedError, match="upgrade failed") as info:
                        await session.subscribe_transactions(["Prog1111111111111111111111111111"])
    assert "gave up after 2 reconnect attempts" in str(info.value)
    assert len(accepted) == 1 + 2
    assert not [s for s in session.status.history if isinstance(s, Reconnecting)]
