"""TLS end to end: the client verifies certificates by default and completes a session
over ``wss://`` when given the right trust anchors.

The local server speaks plain WebSocket; here its per-connection handler sits behind a
TLS listener on loopback, so both planes run over real TLS. Real sockets mean real time:
each test is bounded by ``fail_after`` and asserts no durations.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
import trustme
from trio_websocket import WebSocketConnection

from tests.client.helpers import drive, expected_transactions, signatures
from tests.conftest import SECRET_KEY
from trio_backtest import (
    ClientConfig,
    Completed,
    CreateSession,
    SessionCreateError,
    open_backtest_session,
)
from trio_backtest._transport import websocket_connector
from trio_backtest.server import LocalServer, open_local_server
from trio_backtest.server._server import handle_connection

#: Generous for loopback; the tests take well under a second each.
BOUND = 20.0


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def open_tls_server(ca: trustme.CA) -> AsyncIterator[tuple[LocalServer, str]]:
    """A local server behind a TLS listener on 127.0.0.1; yields it and its wss:// URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=7) as server:

        async def handler(stream: trio.SocketStream) -> None:
            tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
            await handle_connection(server._core, tls, None)

        (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listener.socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, [listener])
            yield server, f"wss://127.0.0.1:{port}/backtest"
            nursery.cancel_scope.cancel()


class CountingConnector:
    """The default TCP/TLS connector, counting attempts and what they raised."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.errors: list[BaseException] = []

    async def __call__(self, nursery: trio.Nursery, url: str, **kwargs: Any) -> WebSocketConnection:
        self.urls.append(url)
        try:
            return await websocket_connector(nursery, url, **kwargs)
        except Exception as exc:
            self.errors.append(exc)
            raise


async def test_a_session_completes_over_wss(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    config = ClientConfig(ssl_context=client_context)
    connector = CountingConnector()
    create = CreateSession(start_slot=0, slot_count=4)
    with trio.fail_after(BOUND):
        async with open_tls_server(ca) as (server, url):
            program = server.ledger.programs[0]
            async with open_backtest_session(
                url, SECRET_KEY, create, config=config, connector=connector
            ) as session:
                assert session.info.rpc_endpoint.startswith(url + "/")
                await session.subscribe_transactions([program])
                events = await drive(session, stride=5)
                stats = session.statistics()
    assert isinstance(events[-1], Completed)
    assert signatures(events) == expected_transactions(server, [program], 0, 4)
    assert connector.urls == [url, session.info.rpc_endpoint]  # both planes over TLS
    assert connector.errors == []
    assert stats.reconnects == {"control": 0, "transactions[0]": 0}


#: A budget that gives up after two quick retries: the policy is the same, only faster.
FAST = ClientConfig(
    reconnect_max_attempts=2, reconnect_initial_backoff=0.01, reconnect_max_backoff=0.01
)


async def _create_fails(url: str, config: ClientConfig, connector: CountingConnector) -> str:
    with pytest.raises(SessionCreateError) as info:
        async with open_backtest_session(
            url,
            SECRET_KEY,
            CreateSession(start_slot=0, slot_count=1),
            config=config,
            connector=connector,
        ):
            pytest.fail("the create must fail")  # pragma: no cover
    return str(info.value)


async def test_a_certificate_from_another_ca_is_rejected_at_once(ca: trustme.CA) -> None:
    # A failed verification is a failed TLS handshake: final, one clear error, no retries.
    stranger = trustme.CA()
    client_context = ssl.create_default_context()
    stranger.configure_trust(client_context)
    connector = CountingConnector()
    with trio.fail_after(BOUND):
        async with open_tls_server(ca) as (server, url):
            message = await _create_fails(
                url, attrs.evolve(FAST, ssl_context=client_context), connector
            )
            assert server.statistics().sessions_created == 0
    assert message.startswith("TLS handshake failed: SSLCertVerificationError")
    assert message.endswith("(not retried)")
    assert "\n" not in message
    assert len(connector.urls) == 1
    assert [type(e) for e in connector.errors] == [ssl.SSLCertVerificationError]


async def test_verification_is_on_by_default(ca: trustme.CA) -> None:
    connector = CountingConnector()
    with trio.fail_after(BOUND):
        async with open_tls_server(ca) as (_server, url):
            message = await _create_fails(url, FAST, connector)
    assert message.startswith("TLS handshake failed: SSLCertVerificationError")
    assert [type(e) for e in connector.errors] == [ssl.SSLCertVerificationError]


async def test_wss_to_a_plain_server_fails_at_once_naming_tls() -> None:
    # A plain HTTP server answers the TLS hello in clear text: a protocol mismatch,
    # final, not retried twenty times.
    async def plain_http(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await stream.aclose()

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    connector = CountingConnector()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, plain_http, [listener])
            message = await _create_fails(f"wss://127.0.0.1:{port}/backtest", FAST, connector)
            nursery.cancel_scope.cancel()
    assert message.startswith("TLS handshake failed: SSLError")
    assert message.endswith("(not retried)")
    assert len(connector.urls) == 1


async def test_a_wrong_key_over_wss_is_final_and_not_echoed(ca: trustme.CA) -> None:
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    connector = CountingConnector()
    wrong = SECRET_KEY + "-wrong"
    with trio.fail_after(BOUND):
        async with open_tls_server(ca) as (_server, url):
            with pytest.raises(SessionCreateError) as info:
                async with open_backtest_session(
                    url,
                    wrong,
                    CreateSession(start_slot=0, slot_count=1),
                    config=ClientConfig(ssl_context=client_context),
                    connector=connector,
                ):
                    pytest.fail("a wrong key must be refused")  # pragma: no cover
    assert "401" in str(info.value)
    assert "not retried" in str(info.value)
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value)
    assert len(connector.urls) == 1
    assert [type(e) for e in connector.errors] == [trio_websocket.ConnectionRejected]
