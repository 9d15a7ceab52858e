"""The API key stays secret; plain ws:// to another host needs an explicit opt-in."""

from __future__ import annotations

import pytest
import trio

from tests.client.helpers import drive
from tests.conftest import SECRET_KEY
from trio_backtest import (
    ClientConfig,
    CreateSession,
    SessionCreateError,
    open_backtest_session,
    spawn_control_manager,
)
from trio_backtest._transport import (
    ApiKey,
    check_transport_security,
    display_url,
    resolve_rpc_endpoint,
)
from trio_backtest.server import LocalServer


async def test_key_absent_from_reprs_statistics_and_errors(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    create = CreateSession(start_slot=0, slot_count=3, disconnect_timeout_secs=30)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        handle = await session.subscribe_transactions(server.ledger.programs[:1])
        await drive(session)
        texts = [repr(session), repr(handle), repr(session.statistics()), repr(session.status)]
    async with trio.open_nursery() as nursery:
        control = await spawn_control_manager(
            nursery, server.url, SECRET_KEY, create, connector=server.connector()
        )
        texts.append(repr(control))
        await control.aclose()
    texts.append(repr(ApiKey(SECRET_KEY)))
    texts.append(str(ApiKey(SECRET_KEY)))
    for text in texts:
        assert SECRET_KEY not in text
    assert ApiKey(SECRET_KEY).reveal() == SECRET_KEY


async def test_wrong_key_error_does_not_echo_the_key(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    bad = SECRET_KEY + "-but-wrong"
    with pytest.raises(SessionCreateError) as info:
        async with open_backtest_session(
            server.url, bad, CreateSession(start_slot=0, slot_count=1), connector=server.connector()
        ):
            pass  # pragma: no cover
    assert SECRET_KEY not in str(info.value)
    assert SECRET_KEY not in repr(info.value)


def test_plain_ws_to_another_host_needs_allow_insecure() -> None:
    check_transport_security("ws://127.0.0.1:9/backtest", ClientConfig())
    check_transport_security("ws://localhost:9/backtest", ClientConfig())
    check_transport_security("wss://example.org/backtest", ClientConfig())
    with pytest.raises(ValueError, match="allow_insecure"):
        check_transport_security("ws://example.org/backtest", ClientConfig())
    check_transport_security("ws://example.org/backtest", ClientConfig(allow_insecure=True))
    with pytest.raises(ValueError, match="ws:// or wss://"):
        check_transport_security("http://example.org/backtest", ClientConfig())


async def test_open_session_refuses_insecure_before_connecting() -> None:
    with pytest.raises(ValueError, match="allow_insecure"):
        async with open_backtest_session(
            "ws://example.org/backtest", SECRET_KEY, CreateSession(start_slot=0, slot_count=1)
        ):
            pass  # pragma: no cover


def test_rpc_endpoint_resolution() -> None:
    base = "wss://sim.example:8443/backtest"
    assert resolve_rpc_endpoint(base, "/backtest/abc") == "wss://sim.example:8443/backtest/abc"
    assert resolve_rpc_endpoint(base, "backtest/abc") == "wss://sim.example:8443/backtest/abc"
    assert resolve_rpc_endpoint(base, "https://other/backtest/x") == "wss://other/backtest/x"
    assert resolve_rpc_endpoint(base, "WSS://other/backtest/x") == "wss://other/backtest/x"
    assert resolve_rpc_endpoint(base, "/backtest/x?v=2") == "wss://sim.example:8443/backtest/x?v=2"
    plain = "ws://127.0.0.1:9/backtest"
    assert resolve_rpc_endpoint(plain, "http://other:80/b/x") == "ws://other:80/b/x"
    assert resolve_rpc_endpoint(plain, "ws://other/b") == "ws://other/b"
    assert resolve_rpc_endpoint(plain, "wss://other/b") == "wss://other/b"


@pytest.mark.parametrize(
    ("endpoint", "resolved"),
    [
        ("/backtest/x/../y", "wss://sim.example/backtest/y"),
        ("/backtest/../../../etc/passwd", "wss://sim.example/etc/passwd"),
        ("/backtest/./x/.", "wss://sim.example/backtest/x/"),
        ("https://other/a/b/../../backtest/x", "wss://other/backtest/x"),
    ],
)
def test_rpc_endpoint_dot_segments_are_removed(endpoint: str, resolved: str) -> None:
    assert resolve_rpc_endpoint("wss://sim.example/backtest", endpoint) == resolved


def test_rpc_endpoint_credentials_are_dropped() -> None:
    for endpoint in ("wss://user:hunter2@other:9/backtest/x", "https://hunter2@other:9/backtest/x"):
        resolved = resolve_rpc_endpoint("wss://sim.example/backtest", endpoint)
        assert resolved == "wss://other:9/backtest/x"
    # Credentials in the control URL never reach the data plane either.
    resolved = resolve_rpc_endpoint("wss://me:hunter2@sim.example/backtest", "/backtest/x")
    assert resolved == "wss://sim.example/backtest/x"


@pytest.mark.parametrize(
    ("endpoint", "why"),
    [
        ("ftp://other/backtest/x", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("wss://", "no host"),
        ("https://hunter2@/backtest/x", "no host"),
        ("ws://other/backtest/x", "from wss:// to plain ws://"),
        ("http://other/backtest/x", "from wss:// to plain ws://"),
    ],
)
def test_rpc_endpoint_refusals(endpoint: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as info:
        resolve_rpc_endpoint("wss://sim.example/backtest", endpoint)
    assert "hunter2" not in str(info.value)
    assert "other" not in str(info.value)


def test_rpc_endpoint_downgrade_needs_allow_insecure() -> None:
    resolved = resolve_rpc_endpoint(
        "wss://sim.example/backtest", "ws://other/backtest/x", allow_insecure=True
    )
    assert resolved == "ws://other/backtest/x"


def test_empty_key_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ApiKey("")


def test_urls_in_reprs_and_errors_carry_no_credentials() -> None:
    assert display_url("wss://user:pw@host:8443/backtest?token=x") == "wss://host:8443/backtest"
    with pytest.raises(ValueError, match="host") as info:
        check_transport_security("http://user:pw@host/backtest?token=x", ClientConfig())
    assert "pw" not in str(info.value)
    assert "token" not in str(info.value)
