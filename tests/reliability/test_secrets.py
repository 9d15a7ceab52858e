"""The API key stays secret (client.md §7): no log record, repr or exception message
shows it, it never travels over plain ws:// to another machine unasked, and the data
plane never receives it — checked on the bytes the server received."""

from __future__ import annotations

import logging
import random
import ssl
import traceback
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import attrs
import pytest
import trio

import tests.conftest
from tests.client.helpers import drive, until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.fakes import (
    URL,
    FakeConnection,
    TappingConnector,
    control,
    open_fake_server,
    unwrap_single,
)
from trio_backtest import (
    ClientConfig,
    Completed,
    Connector,
    ContinueParams,
    ContinueSendError,
    ControlClosedError,
    ControlFailedError,
    CreateSession,
    ManagedSessionError,
    NotReadyError,
    ParallelSubSession,
    ReconnectCoordinator,
    SessionCreateError,
    SubscriptionFailedError,
    open_backtest_session,
    open_parallel_session,
    spawn_control_manager,
    spawn_transaction_subscription_manager,
)
from trio_backtest.protocol import Continue
from trio_backtest.server import LocalServer, open_local_server

SIMPLE = CreateSession(start_slot=10, slot_count=5)


@pytest.fixture
async def server() -> Any:
    """A small memory-only local server (20-slot bundles, 5 transactions a slot)."""
    async with open_local_server(
        api_keys=(SECRET_KEY, "other-key"),
        tcp=False,
        seed=3,
        bundle_size=20,
        transactions_per_slot=5,
    ) as srv:
        yield srv


def _texts(obj: object) -> Iterator[str]:
    """Every rendering of ``obj`` a user or a log might see."""
    yield repr(obj)
    yield str(obj)
    if isinstance(obj, BaseException):
        yield "".join(traceback.format_exception(obj))
        for arg in obj.args:
            yield repr(arg)
    if attrs.has(type(obj)):
        yield repr(attrs.asdict(obj, recurse=True))  # type: ignore[arg-type]


def assert_no_key(*objects: object) -> None:
    """Fail if the API key shows in any rendering of ``objects``."""
    for obj in objects:
        for text in _texts(obj):
            assert SECRET_KEY not in text, f"API key leaked by {type(obj).__qualname__}"


# ---------------------------------------------------------------- the log check itself


def _leaky_record(message: str, *args: object, exc_text: str | None = None) -> logging.LogRecord:
    record = logging.LogRecord("trio_backtest.test", logging.INFO, __file__, 1, message, args, None)
    record.exc_text = exc_text
    return record


class _FakeCaplog:
    """Just what the suite-wide fixture uses of ``caplog``: the test's records are those of
    its call phase, as pytest files them (``records`` is the current, teardown, phase)."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        self._call = records
        self.records: list[logging.LogRecord] = []
        self.level: int | None = None

    def set_level(self, level: int) -> None:
        self.level = level

    def get_records(self, when: str) -> list[logging.LogRecord]:
        return self._call if when == "call" else []


def _run_suite_check(records: list[logging.LogRecord]) -> None:
    """Run tests/conftest.py's autouse check, unchanged, over ``records``."""
    fixture = tests.conftest._api_key_never_logged
    check = fixture.__wrapped__  # type: ignore[attr-defined]
    caplog = _FakeCaplog(records)
    steps = check(caplog)
    next(steps)  # the test would run here
    assert caplog.level == logging.DEBUG
    with pytest.raises(StopIteration):
        next(steps)


@pytest.mark.parametrize(
    "record",
    [
        _leaky_record(f"connecting with {SECRET_KEY}"),
        _leaky_record("headers: %r", [("X-API-Key", SECRET_KEY)]),
        _leaky_record("key=%s", f"prefix-{SECRET_KEY}-suffix"),
        _leaky_record("a failure", exc_text=f"Traceback ...\nValueError: {SECRET_KEY}"),
    ],
    ids=["message", "args", "embedded", "traceback"],
)
def test_the_suite_wide_log_check_catches_a_leak(record: logging.LogRecord) -> None:
    with pytest.raises(AssertionError):
        _run_suite_check([_leaky_record("harmless"), record])


def test_the_suite_wide_log_check_passes_clean_records() -> None:
    _run_suite_check([_leaky_record("key=%s", "ApiKey('***')"), _leaky_record("fine")])


# ---------------------------------------------------------------- reprs


async def test_no_public_object_shows_the_key(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    program = server.ledger.programs[0]
    config = ClientConfig(ssl_context=ssl.create_default_context(), rng=random.Random(1))
    seen: list[object] = [config]
    create = CreateSession(start_slot=0, slot_count=3, disconnect_timeout_secs=30)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector(), config=config
    ) as session:
        handle = await session.subscribe_transactions([program])
        await until_ready(session)
        seen += [session, handle, session.info, session.status, session.statistics()]
        server.faults.drop("any")  # reconnect statuses carry causes
        await session.send_continue(ContinueParams(advance_count=2))
        events = await drive(session)
        assert isinstance(events[-1], Completed)
        seen += [session.status, session.status.history, handle.status.history]
        seen += [session.statistics(), handle.counters]
    async with trio.open_nursery() as nursery:
        control = await spawn_control_manager(
            nursery, server.url, SECRET_KEY, create, connector=server.connector()
        )
        assert control.info is not None
        sub = await spawn_transaction_subscription_manager(
            nursery, control.info.rpc_endpoint, [program], connector=server.connector()
        )
        seen += [control, control.info, control.status, control.create_params, sub, sub.status]
        await sub.aclose()
        await control.aclose()
        seen += [control.status.history, sub.status.history]
    parallel = CreateSession(start_slot=0, end_slot=39, disconnect_timeout_secs=30)
    async with open_parallel_session(
        server.url, SECRET_KEY, parallel, connector=server.connector()
    ) as batch:
        subs: tuple[ParallelSubSession, ...] = batch.sub_sessions
        assert len(subs) == 2
        await subs[0].subscribe_transactions([program])
        seen += [batch, batch.coordinator, batch.status, *subs, *subs[0].subscriptions]
        seen += [batch.statistics(), batch.coordinator.statistics(), subs[0].statistics()]
        await subs[1].aclose()
        seen += [subs[1], batch.statistics()]
    seen.append(ReconnectCoordinator())
    assert_no_key(*seen)


# ---------------------------------------------------------------- failure paths


Scenario = Callable[[LocalServer], Awaitable[None]]


async def _wrong_key(server: LocalServer) -> None:
    async with open_backtest_session(
        server.url, SECRET_KEY + "x", SIMPLE, connector=server.connector()
    ):
        pass  # pragma: no cover


async def _invalid_create(server: LocalServer) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.expect("createBacktestSession")
        await conn.send(control("error", {"InvalidRequest": {"error": "bad range"}}))

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake),
    ):
        pass  # pragma: no cover


async def _create_never_answered(server: LocalServer) -> None:
    config = ClientConfig(reconnect_max_attempts=1, handshake_response_timeout=5)
    async with (
        open_fake_server(FakeConnection.hang) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake, config=config),
    ):
        pass  # pragma: no cover


async def _closed_by_server(server: LocalServer) -> None:
    async def script(conn: FakeConnection) -> None:
        await conn.create()
        await conn.close(1000)

    async with (
        open_fake_server(script) as fake,
        open_backtest_session(URL, SECRET_KEY, SIMPLE, connector=fake) as session,
    ):
        while True:
            await session.next_event()


async def _control_lost(server: LocalServer) -> None:
    async with open_backtest_session(
        server.url, SECRET_KEY, SIMPLE, connector=server.connector()
    ) as session:
        await until_ready(session)
        server.faults.drop("control")
        while True:
            await session.next_event()


async def _attach_refused(server: LocalServer) -> None:
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=1)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector()
    ) as session:
        await until_ready(session)
        server.faults.refuse_upgrades(1, status=503, plane="control")  # outlive the session
        server.faults.drop("control")
        while True:
            await session.next_event()


async def _budget_spent(server: LocalServer) -> None:
    config = ClientConfig(reconnect_max_attempts=2)
    create = CreateSession(start_slot=0, slot_count=5, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=server.connector(), config=config
    ) as session:
        await until_ready(session)
        server.faults.refuse_upgrades(10, status=500, plane="control")
        server.faults.drop("control")
        while True:
            await session.next_event()


async def _subscription_refused(server: LocalServer) -> None:
    config = ClientConfig(reconnect_max_attempts=1)
    async with open_backtest_session(
        server.url, SECRET_KEY, SIMPLE, connector=server.connector(), config=config
    ) as session:
        server.faults.refuse_upgrades(5, status=500, plane="data")
        await session.subscribe_transactions(server.ledger.programs[:1])


async def _subscription_gone(server: LocalServer) -> None:
    async with open_backtest_session(
        server.url, SECRET_KEY, SIMPLE, connector=server.connector()
    ) as session:
        await session.subscribe_transactions(server.ledger.programs[:1])
        server.faults.close("data", 4404)
        while True:
            await session.next_event()


async def _not_ready(server: LocalServer) -> None:
    async with open_backtest_session(
        server.url, SECRET_KEY, SIMPLE, connector=server.connector()
    ) as session:
        await until_ready(session)
        await session.send_continue(ContinueParams())
        await session.send_continue(ContinueParams())


async def _continue_after_close(server: LocalServer) -> None:
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            control = await spawn_control_manager(
                nursery, server.url, SECRET_KEY, SIMPLE, connector=server.connector()
            )
            await control.aclose()
            await control.send(Continue(ContinueParams()))


async def _insecure(server: LocalServer) -> None:
    async with open_backtest_session("ws://sim.example/backtest", SECRET_KEY, SIMPLE):
        pass  # pragma: no cover


async def _insecure_parallel(server: LocalServer) -> None:
    async with open_parallel_session("ws://10.1.2.3/backtest", SECRET_KEY, SIMPLE):
        pass  # pragma: no cover


SCENARIOS: dict[str, tuple[Scenario, type[Exception]]] = {
    "wrong key": (_wrong_key, SessionCreateError),
    "invalid create": (_invalid_create, SessionCreateError),
    "create never answered": (_create_never_answered, SessionCreateError),
    "closed by the server": (_closed_by_server, ControlClosedError),
    "control lost": (_control_lost, ControlFailedError),
    "attach refused": (_attach_refused, ControlFailedError),
    "budget spent": (_budget_spent, ControlFailedError),
    "subscription refused": (_subscription_refused, SubscriptionFailedError),
    "subscription gone": (_subscription_gone, SubscriptionFailedError),
    "not ready": (_not_ready, NotReadyError),
    "continue after close": (_continue_after_close, ContinueSendError),
    "insecure": (_insecure, ValueError),
    "insecure parallel": (_insecure_parallel, ValueError),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_no_failure_shows_the_key(
    name: str, server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    scenario, expected = SCENARIOS[name]
    with pytest.raises(expected) as info:
        await scenario(server)
    error = info.value
    assert type(error) is expected  # the documented class, not a wrapper
    assert_no_key(error, *_chain(error))


def _chain(error: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    seen = error.__cause__ or error.__context__
    while seen is not None and len(found) < 20:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


# ---------------------------------------------------------------- allow_insecure


INSECURE = ["ws://sim.example/backtest", "ws://10.0.0.7:8900/backtest", "ws://localhost.evil/b"]
LOOPBACK = ["ws://localhost:9/backtest", "ws://127.0.0.1:9/backtest", "ws://[::1]:9/backtest"]


async def _open(url: str, config: ClientConfig, fake: Connector, kind: str) -> None:
    if kind == "session":
        async with open_backtest_session(url, SECRET_KEY, SIMPLE, config=config, connector=fake):
            return
    if kind == "parallel":
        async with open_parallel_session(url, SECRET_KEY, SIMPLE, config=config, connector=fake):
            return  # pragma: no cover - the fake cannot create batches
    with unwrap_single():
        async with trio.open_nursery() as nursery:
            handle = await spawn_control_manager(
                nursery, url, SECRET_KEY, SIMPLE, config=config, connector=fake
            )
            await handle.aclose()


@pytest.mark.parametrize("kind", ["session", "parallel", "control"])
@pytest.mark.parametrize("url", INSECURE)
async def test_plain_ws_to_another_host_is_refused_before_connecting(
    url: str, kind: str, autojump_clock: trio.abc.Clock
) -> None:
    async with open_fake_server(FakeConnection.create) as fake:
        with pytest.raises(ValueError, match="allow_insecure") as info:
            await _open(url, ClientConfig(), fake, kind)
        assert fake.connections == []  # nothing was sent anywhere
    assert_no_key(info.value)


@pytest.mark.parametrize("url", INSECURE[:1] + LOOPBACK)
async def test_allowed_plain_ws_connects(url: str, autojump_clock: trio.abc.Clock) -> None:
    config = ClientConfig(allow_insecure=url in INSECURE)
    async with open_fake_server(FakeConnection.create) as fake:
        await _open(url, config, fake, "session")
        (conn,) = fake.of("control")
    assert conn.headers["x-api-key"] == SECRET_KEY


# ---------------------------------------------------------------- the data plane


def _assert_control_tap(headers: dict[str, str], messages: list[str | bytes]) -> None:
    assert headers["x-api-key"] == SECRET_KEY  # the tap sees what the key looks like
    assert messages  # it decoded the traffic too
    assert not any(SECRET_KEY in str(m) for m in messages)


def _assert_data_tap(
    tap_bytes: bytes, headers: dict[str, str], messages: list[str | bytes]
) -> None:
    assert headers, "the tap saw no upgrade request"
    assert "x-api-key" not in headers
    assert SECRET_KEY.encode() not in tap_bytes  # not in the request head, not anywhere
    assert not any(SECRET_KEY in v for v in headers.values())
    assert not any(SECRET_KEY in str(m) for m in messages)


def _check_taps(connector: TappingConnector) -> tuple[int, int]:
    control_taps, data_taps = connector.of("control"), connector.of("data")
    for tap in control_taps:
        _assert_control_tap(*tap.decode())
    for tap in data_taps:
        _assert_data_tap(bytes(tap.received), *tap.decode())
    return len(control_taps), len(data_taps)


async def test_the_data_plane_never_receives_the_key_across_reconnects(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = TappingConnector(server)
    programs = server.ledger.programs[:2]
    create = CreateSession(start_slot=0, slot_count=39, disconnect_timeout_secs=60)
    async with open_backtest_session(
        server.url, SECRET_KEY, create, connector=connector
    ) as session:
        await session.subscribe_transactions(programs)
        await session.subscribe_account_diffs(programs[:1], compression="zstd")
        server.faults.drop("data", after_messages=20)
        await until_ready(session)
        server.faults.drop("control")
        await session.send_continue(ContinueParams(advance_count=10))
        events = await drive(session, stride=10)
        stats = session.statistics()
    assert isinstance(events[-1], Completed)
    assert stats.reconnects["control"] >= 1
    assert sum(v for k, v in stats.reconnects.items() if k != "control") >= 1
    controls, datas = _check_taps(connector)
    assert controls >= 2
    assert datas >= 3


async def test_the_data_plane_never_receives_the_key_in_a_parallel_batch(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    connector = TappingConnector(server)
    program = server.ledger.programs[0]
    create = CreateSession(start_slot=0, end_slot=59, disconnect_timeout_secs=60)
    async with open_parallel_session(server.url, SECRET_KEY, create, connector=connector) as batch:
        subs = batch.sub_sessions
        assert len(subs) == 3
        for sub in subs:
            await sub.subscribe_transactions([program])
        server.faults.drop("data", after_messages=10)

        async def run(sub: ParallelSubSession) -> None:
            events = await drive(sub, stride=5)
            assert isinstance(events[-1], Completed)

        async with trio.open_nursery() as nursery:
            for sub in subs:
                nursery.start_soon(run, sub)
        stats = batch.statistics()
    reconnects = sum(
        v for s in stats.sub_sessions.values() for k, v in s.reconnects.items() if k != "control"
    )
    assert reconnects >= 1
    controls, datas = _check_taps(connector)
    assert controls == 1
    assert datas == 3 + reconnects


class _LeakyConnector:
    """Sends the key to every plane: what the data-plane check must catch."""

    def __init__(self, inner: TappingConnector) -> None:
        self.inner = inner

    async def __call__(self, nursery: trio.Nursery, url: str, **kwargs: Any) -> Any:
        kwargs["headers"] = [("X-API-Key", SECRET_KEY)]
        return await self.inner(nursery, url, **kwargs)


async def test_the_data_plane_check_catches_a_leaked_header(
    server: LocalServer, autojump_clock: trio.abc.Clock
) -> None:
    tapping = TappingConnector(server)
    async with open_backtest_session(
        server.url, SECRET_KEY, SIMPLE, connector=_LeakyConnector(tapping)
    ) as session:
        await session.subscribe_transactions(server.ledger.programs[:1])
    with pytest.raises(AssertionError):
        _check_taps(tapping)


def test_the_repr_check_catches_a_leak() -> None:
    with pytest.raises(AssertionError):
        assert_no_key(ValueError(f"bad key {SECRET_KEY}"))
    with pytest.raises(ManagedSessionError) as info:
        try:
            raise KeyError(SECRET_KEY)
        except KeyError as inner:
            raise ManagedSessionError("wrapped") from inner
    assert SECRET_KEY not in str(info.value)  # its own text is clean, its cause is not
    with pytest.raises(AssertionError):
        assert_no_key(info.value)
