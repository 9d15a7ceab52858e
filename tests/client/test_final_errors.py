"""What is retried, what is not, and how long the client waits (client.md §3)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection

from tests.client.helpers import FixedRandom, until_ready
from tests.conftest import SECRET_KEY
from trio_backtest import (
    ClientConfig,
    ContinueParams,
    ControlFailedError,
    CreateSession,
    Failed,
    Reconnecting,
    SessionCreateError,
    open_backtest_session,
)
from trio_backtest.server import LocalServer, open_local_server


class RecordingConnector:
    """Wraps a connector: records when each connection was attempted, and to where."""

    def __init__(self, inner: Any, swap_key_after: int | None = None, other_key: str = "") -> None:
        self.inner = inner
        self.attempts: list[tuple[float, str]] = []
        self._swap_after = swap_key_after
        self._other_key = other_key

    async def __call__(self, nursery: trio.Nursery, url: str, **kwargs: Any) -> WebSocketConnection:
        self.attempts.append((trio.current_time(), url))
        control = [a for a in self.attempts if a[1].endswith("/backtest")]
        swap = self._swap_after is not None and url.endswith("/backtest")
        if swap and len(control) > (self._swap_after or 0):
            kwargs["headers"] = [("X-API-Key", self._other_key)]
        conn: WebSocketConnection = await self.inner(nursery, url, **kwargs)
        return conn

    def control_attempts(self) -> list[float]:
        return [t for t, url in self.attempts if url.endswith("/backtest")]


async def _ready(session: Any) -> None:
    await until_ready(session)


async def test_401_is_final(server: LocalServer, autojump_clock: trio.abc.Clock) -> None:
    connector = RecordingConnector(server.connector())
    with pytest.raises(SessionCreateError) as info:
        async with open_backtest_session(
            server.url, "wrong-key", CreateSession(start_slot=0, slot_count=1), connector=connector
        ):
            pass  # pragma: no cover
    assert "401" in str(info.value)
    assert "wrong-key" not in str(info.value)
    assert len(connector.attempts) == 1


async def test_session_not_found_on_attach_is_final(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = RecordingConnector(server.connector())
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=1)
    with pytest.raises(ControlFailedError, match="SessionNotFound"):
        async with open_backtest_session(
            server.url, SECRET_KEY, create, connector=connector
        ) as session:
            await _ready(session)
            server.faults.refuse_upgrades(1, status=503, plane="control")  # >= 5 s away
            server.faults.drop("control")
            await session.next_event()
    assert len(connector.control_attempts()) == 3  # create, refused, attach -> not found


async def test_owner_mismatch_on_attach_is_final(autojump_clock: trio.abc.Clock) -> None:
    async with open_local_server(api_keys=(SECRET_KEY, "another-key"), tcp=False) as srv:
        connector = RecordingConnector(srv.connector(), swap_key_after=1, other_key="another-key")
        create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
        with pytest.raises(ControlFailedError, match="SessionOwnerMismatch"):
            async with open_backtest_session(
                srv.url, SECRET_KEY, create, connector=connector
            ) as session:
                await _ready(session)
                srv.faults.drop("control")
                await session.next_event()
        assert len(connector.control_attempts()) == 2


async def test_close_1008_is_final(server: LocalServer, autojump_clock: trio.abc.Clock) -> None:
    connector = RecordingConnector(server.connector())
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
    with pytest.raises(ControlFailedError, match="1008"):
        async with open_backtest_session(
            server.url, SECRET_KEY, create, connector=connector
        ) as session:
            await _ready(session)
            server.faults.close("control", 1008)
            await session.next_event()
    assert len(connector.control_attempts()) == 1


async def test_exhausted_budget_fails_with_the_documented_exception(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = RecordingConnector(server.connector())
    config = ClientConfig(rng=random.Random(5))
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=900)
    with pytest.raises(ControlFailedError, match="gave up after 20"):
        async with open_backtest_session(
            server.url, SECRET_KEY, create, connector=connector, config=config
        ) as session:
            await _ready(session)
            server.faults.refuse_upgrades(1000, status=500, plane="control")
            server.faults.drop("control")
            await session.next_event()
    assert isinstance(session.status.value, Failed)
    assert len(connector.control_attempts()) == 1 + 20


async def test_close_1013_waits_at_least_five_seconds(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = RecordingConnector(server.connector())
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=connector
    ) as session:
        await _ready(session)
        closed_at = trio.current_time()
        server.faults.close("control", 1013)
        await session.status.wait_for(lambda s: isinstance(s, Reconnecting))
        await session.send_continue(ContinueParams(advance_count=10))  # gated until back
        attempts = connector.control_attempts()
    assert len(attempts) == 2
    assert attempts[1] - closed_at >= 5.0


async def test_backoff_schedule_matches_the_policy_exactly(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = RecordingConnector(server.connector())
    config = ClientConfig(rng=FixedRandom(1.0))  # every jitter draw at its top: x 1.2
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=900)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=connector, config=config
    ) as session:
        await _ready(session)
        server.faults.refuse_upgrades(6, status=500, plane="control")
        server.faults.drop("control")
        await session.status.wait_for(lambda s: isinstance(s, Reconnecting))
        await session.send_continue(ContinueParams(advance_count=10))
        attempts = connector.control_attempts()
    # client.md §3: attempt n >= 2 waits 0.25 s x 2^(n-2), here x 1.2 of jitter.
    gaps = [b - a for a, b in itertools.pairwise(attempts[1:])]
    assert len(attempts) == 1 + 7
    assert gaps == pytest.approx([0.3, 0.6, 1.2, 2.4, 4.8, 9.6], abs=1e-9)
