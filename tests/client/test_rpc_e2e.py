"""`session.rpc` end to end: the local server's real runtime, over loopback TCP.

The guide's three loops (``docs/examples``) run here as users run them; their results are
checked against what the server knows (its ledger's genesis state and planned batches,
its record of executions and of HTTP requests), and against numbers written down from
Solana's rules (5,000 lamports per signature, 150 compute units for a transfer).
"""

from __future__ import annotations

import gc
import importlib.util
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import trio
import trustme
from solders.account import Account
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from tests.client.helpers import drive, until_ready
from tests.conftest import SECRET_KEY
from tests.reliability.test_tls import open_tls_server
from trio_backtest import (
    ClientConfig,
    ContinueParams,
    CreateSession,
    ManagedBacktestSession,
    Paused,
    RpcUnavailableError,
    open_backtest_session,
    open_parallel_session,
)
from trio_backtest._rpc import open_session_rpc
from trio_backtest.server import LocalServer, open_local_server

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
#: Hang bound for a whole test; no test asserts how long anything takes.
BOUND = 60
SYSTEM_LOGS = [
    "Program 11111111111111111111111111111111 invoke [1]",
    "Program 11111111111111111111111111111111 success",
]


def example(name: str) -> ModuleType:
    """A guide example, loaded from its file as a user would run it."""
    spec = importlib.util.spec_from_file_location(f"docs_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def srv() -> AsyncIterator[LocalServer]:
    async with open_local_server(api_keys=(SECRET_KEY,), seed=2) as server:
        yield server


def bot_transfer(bot: Keypair, to: Pubkey, lamports: int, blockhash: Any) -> VersionedTransaction:
    pay = TransferParams(from_pubkey=bot.pubkey(), to_pubkey=to, lamports=lamports)
    return VersionedTransaction(
        MessageV0.try_compile(bot.pubkey(), [transfer(pay)], [], blockhash), [bot]
    )


# ---------------------------------------------------------------- the guide's three loops


async def test_loop_read_state_then_run(srv: LocalServer) -> None:
    wallets = list(srv.ledger.wallets[:3])
    with trio.fail_after(BOUND):
        report = await example("read_then_run").main(
            srv.url, SECRET_KEY, wallets=wallets, start_slot=1_000
        )
    genesis = srv.ledger.genesis()  # slot 1000 starts a bundle: nothing executed yet
    assert report.balances == {w: genesis[Pubkey.from_string(w)].lamports for w in wallets}
    assert report.recipient_before == 0
    assert report.recipient_after == 1_234_567
    assert report.bot_after == 5_000_000_000 - 1_234_567 - 5_000  # one signature's fee
    assert report.seen == 1
    assert srv.user_transactions(report.session_id) == (report.signature,)


async def test_loop_pause_on_every_discovered_batch(srv: LocalServer) -> None:
    program = srv.ledger.app_programs[1]
    with trio.fail_after(BOUND):
        report = await example("pause_on_discovery").main(
            srv.url, SECRET_KEY, program=program, start_slot=1_000, slot_count=4
        )
    planned = [
        (slot, tx.index, tx.signature)
        for slot in range(1_000, 1_005)
        for tx in srv.ledger.slot(slot).transactions
        if tx.mentions(program)
    ]
    assert len(planned) >= 2
    assert [(p.slot, p.batch_index, p.signature) for p in report.pauses] == planned
    for pause in report.pauses:
        assert pause.drained_error is not None  # no payer, no transaction
        # Restored, the simulation foretells the real execution the stream reported.
        assert (pause.restored_error is None) == (report.executed[pause.signature] is None)
        if pause.restored_error is None:
            assert f"Program {program} success" in pause.restored_logs
    assert srv.executed_slots(report.session_id) == list(range(1_000, 1_005))


async def test_loop_step_one_slot_at_a_time_with_a_simulation(srv: LocalServer) -> None:
    with trio.fail_after(BOUND):
        report = await example("step_and_simulate").main(
            srv.url, SECRET_KEY, to=srv.ledger.wallets[0], start_slot=1_000, slot_count=4
        )
    slots = list(range(1_000, 1_005))
    assert report.slots == slots
    assert srv.executed_slots(report.session_id) == slots
    assert [s.slot for s in report.simulations] == slots
    for simulated in report.simulations:
        assert (simulated.error, simulated.logs, simulated.units) == (None, SYSTEM_LOGS, 150)
    assert report.bot_balance == 1_000_000_000  # simulations leave no trace
    assert srv.user_transactions(report.session_id) == ()


# ---------------------------------------------------------------- faults of the HTTP data plane


async def test_concurrent_reads_under_drops_and_empty_502s(srv: LocalServer) -> None:
    create = CreateSession(start_slot=1_000, slot_count=2)
    genesis = srv.ledger.genesis()
    wallets, tokens = srv.ledger.wallets, srv.ledger.token_accounts
    with trio.fail_after(BOUND):
        async with open_backtest_session(srv.url, SECRET_KEY, create) as session:
            await until_ready(session)
            srv.faults.http(drop=0.05, bad_gateway=0.05, seed=11)
            balances: list[tuple[str, int]] = []
            accounts: list[tuple[str, Account | None]] = []

            async def balance(address: str) -> None:
                balances.append((address, await session.rpc.get_balance(address)))

            async def account(address: str) -> None:
                accounts.append((address, await session.rpc.get_account_info(address)))

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    if i % 2:
                        nursery.start_soon(balance, wallets[i % len(wallets)])
                    else:
                        nursery.start_soon(account, tokens[i % len(tokens)])
            calls = srv.rpc_calls(session.info.session_id)
    assert len(balances) == len(accounts) == 50
    assert balances == [(w, genesis[Pubkey.from_string(w)].lamports) for w, _ in balances]
    assert accounts == [(t, genesis[Pubkey.from_string(t)]) for t, _ in accounts]
    faults = [c.fault for c in calls if c.fault is not None]
    assert {"drop", "bad_gateway"} <= set(faults)  # the faults really fired
    assert len(calls) == 100 + len(faults)  # each fault cost exactly one retry


async def test_a_send_whose_answer_is_lost_executes_once(srv: LocalServer) -> None:
    create = CreateSession(start_slot=1_000, slot_count=3)
    bot = Keypair.from_seed(bytes([9] * 32))
    recipients = [Keypair.from_seed(bytes([10 + i] * 32)).pubkey() for i in range(5)]
    sent: dict[str, int] = {}
    unclear: list[RpcUnavailableError] = []
    with trio.fail_after(BOUND):
        async with open_backtest_session(srv.url, SECRET_KEY, create) as session:
            rpc = session.rpc
            sid = session.info.session_id
            await until_ready(session)
            await rpc.modify_accounts({bot.pubkey(): Account(10**10, b"", SYSTEM_PROGRAM)})
            blockhash = await rpc.get_latest_blockhash()
            srv.faults.http(lose_answer=0.4, seed=5, session_id=sid)
            # Enough lamports that a new account is rent-exempt, and each one different.
            amounts = [1_000_000 + i for i in range(len(recipients))]
            for to, amount in zip(recipients, amounts, strict=True):
                tx = bot_transfer(bot, to, amount, blockhash)
                try:
                    sent[str(await rpc.send_transaction(tx))] = amount
                except RpcUnavailableError as exc:  # a clear error, never a raw one
                    unclear.append(exc)
            srv.faults.clear()
            await session.send_continue(ContinueParams(advance_count=1))
            await until_ready(session)
            balances = [await rpc.get_balance(to) for to in recipients]
    executed = srv.user_transactions(sid)
    for signature in sent:
        assert executed.count(signature) == 1
    for error in unclear:
        assert error.signature is not None
        assert executed.count(str(error.signature)) <= 1
    assert len(executed) == len(set(executed))
    # Each recipient holds its amount once, or nothing (an unclear send that never ran).
    assert all(b in (0, amount) for b, amount in zip(balances, amounts, strict=True))
    assert sum(1 for b in balances if b) == len(executed)
    calls = srv.rpc_calls(sid)
    lost = [i for i, c in enumerate(calls) if c.method == "sendTransaction" and c.fault]
    assert lost  # the lost answers really happened
    for i in lost:  # ... and each was resolved by asking for its signature first
        assert calls[i + 1].method == "getSignatureStatuses"


# ---------------------------------------------------------------- the session's lifetime


async def test_after_completed_every_call_fails_without_a_request(srv: LocalServer) -> None:
    create = CreateSession(start_slot=1_000, slot_count=1)
    with trio.fail_after(BOUND):
        async with open_backtest_session(srv.url, SECRET_KEY, create) as session:
            await until_ready(session)
            assert await session.rpc.get_slot() == 1_000
            await session.send_continue(ContinueParams(advance_count=5))
            await drive(session)
            sid = session.info.session_id
            before = len(srv.rpc_calls(sid))
            for call in (
                session.rpc.get_slot(),
                session.rpc.get_balance(srv.ledger.wallets[0]),
                session.rpc.call("getVersion"),
            ):
                with pytest.raises(RpcUnavailableError, match="has completed"):
                    await call
            assert len(srv.rpc_calls(sid)) == before


async def test_a_cancelled_call_spares_the_pool_and_leaving_closes_it(srv: LocalServer) -> None:
    create = CreateSession(start_slot=1_000, slot_count=5)
    wallets = srv.ledger.wallets
    genesis = srv.ledger.genesis()
    with trio.fail_after(BOUND):
        async with open_backtest_session(srv.url, SECRET_KEY, create) as session:
            sid = session.info.session_id
            await until_ready(session)
            srv.faults.http(delay=5.0, session_id=sid)
            with trio.move_on_after(0.2) as scope:
                await session.rpc.get_slot()
            assert scope.cancelled_caught
            srv.faults.clear()
            found: list[int] = []

            async def read(address: str) -> None:
                found.append(await session.rpc.get_balance(address))

            async with trio.open_nursery() as nursery:
                for address in wallets * 3:
                    nursery.start_soon(read, address)
            rpc = session.rpc
    assert sorted(found) == sorted(genesis[Pubkey.from_string(w)].lamports for w in wallets * 3)
    with pytest.raises(RpcUnavailableError, match="is closed"):
        await rpc.get_slot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    calls = srv.rpc_calls(sid)
    assert calls
    for call in calls:  # the data plane never sees the API key
        assert "x-api-key" not in call.headers
        assert SECRET_KEY not in " ".join(call.headers.values())
    assert SECRET_KEY not in repr(rpc)


# ---------------------------------------------------------------- parallel batches


async def test_a_parallel_batch_against_a_server_without_slot_lists() -> None:
    async with open_local_server(
        api_keys=(SECRET_KEY,), legacy_sessions_created=True, bundle_size=5
    ) as srv:
        create = CreateSession(start_slot=1_000, end_slot=1_009, disconnect_timeout_secs=60)
        with trio.fail_after(BOUND):
            async with open_parallel_session(srv.url, SECRET_KEY, create) as batch:
                subs = batch.sub_sessions
                assert len(subs) == 2
                assert [sub.range for sub in subs] == [None, None]
                second = subs[1]
                await until_ready(second)
                start = await second.rpc.get_slot()
                await second.send_continue_to(start + 2, None)  # the start of that slot
                paused = await _until(second, Paused)
                assert paused == Paused(start + 2, None)
                assert await second.rpc.get_slot() == start + 2
                async with trio.open_nursery() as nursery:
                    for sub in subs:
                        nursery.start_soon(_finish, sub)
                ids = [sub.info.session_id for sub in subs]
        assert srv.executed_slots(ids[0]) == list(range(1_000, 1_005))
        assert srv.executed_slots(ids[1]) == list(range(1_005, 1_010))
        assert start == 1_005


async def _until(session: ManagedBacktestSession, kind: type[Any]) -> Any:
    while not isinstance(event := await session.next_event(), kind):
        pass
    return event


async def _finish(session: ManagedBacktestSession) -> None:
    if session.ready:
        await session.send_continue(ContinueParams(advance_count=10))
    await drive(session)


# ---------------------------------------------------------------- TLS


async def test_the_data_plane_over_https_is_verified(ca: trustme.CA) -> None:
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    create = CreateSession(start_slot=1_000, slot_count=1)
    async with open_tls_server(ca) as (_server, url):
        with trio.fail_after(BOUND):
            config = ClientConfig(ssl_context=trusted)
            async with open_backtest_session(url, SECRET_KEY, create, config=config) as session:
                await until_ready(session)
                assert session.info.rpc_endpoint.startswith("wss://127.0.0.1:")
                assert await session.rpc.get_slot() == 1_000  # https, with the given anchors
                # Without them the certificate is refused, at once and for good.
                async with open_session_rpc(session.info.rpc_endpoint) as default:
                    with pytest.raises(RpcUnavailableError, match="certificate was refused"):
                        await default.get_slot()
