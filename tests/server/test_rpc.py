"""JSON-RPC over HTTP on a session's path (protocol.md §6), over real loopback TCP.

Requests are built with ``solders.rpc.requests`` where solders has a builder, and every
answer is parsed with ``solders.rpc.responses``: the oracle is solders, not our encoder.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from solders.account import Account
from solders.account_decoder import UiAccountEncoding
from solders.hash import Hash
from solders.message import Message
from solders.pubkey import Pubkey
from solders.rpc.config import RpcAccountInfoConfig, RpcProgramAccountsConfig
from solders.rpc.errors import InvalidParamsMessage, SendTransactionPreflightFailureMessage
from solders.rpc.filter import Memcmp
from solders.rpc.requests import (
    GetAccountInfo,
    GetBalance,
    GetFeeForMessage,
    GetLatestBlockhash,
    GetMultipleAccounts,
    GetProgramAccounts,
    GetSignatureStatuses,
    GetSlot,
    GetTransaction,
    SendVersionedTransaction,
    SimulateVersionedTransaction,
)
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetFeeForMessageResp,
    GetLatestBlockhashResp,
    GetMultipleAccountsResp,
    GetProgramAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    GetTransactionResp,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_ID
from solders.system_program import TransferParams, transfer
from solders.token import ID as TOKEN_ID
from solders.transaction import VersionedTransaction

from tests.conftest import SECRET_KEY
from tests.server.wire import Control, Data, open_control, raw_http, tcp_websocket
from trio_backtest.protocol import (
    AccountDiffNotification,
    Completed,
    CreateSession,
    Paused,
    ReadyForContinue,
    TransactionNotification,
    decode_rpc,
)
from trio_backtest.server import ChaosConfig, LocalServer, open_local_server

BASE64 = RpcAccountInfoConfig(encoding=UiAccountEncoding.Base64)
START = 105
FRESH = Pubkey(bytes([7] * 32))
"""An address no ledger account has."""


@pytest.fixture
async def tcp_server() -> AsyncIterator[LocalServer]:
    async with open_local_server(api_keys=(SECRET_KEY,), seed=9) as server:
        yield server


class Session:
    """A session driven over TCP, with its HTTP endpoint."""

    def __init__(self, control: Control, session_id: str, http: httpx.AsyncClient, url: str):
        self.control = control
        self.id = session_id
        self.http = http
        self.url = url

    async def post(self, body: str | bytes) -> httpx.Response:
        return await self.http.post(self.url, content=body)

    async def call(self, request: Any, response_type: Any) -> Any:
        answer = await self.post(request.to_json())
        assert answer.status_code == 200
        return response_type.from_json(answer.text)

    async def post_raw(self, body: str | bytes) -> bytes:
        """POST over a bare socket (a dropped connection ends an httpx body unclosed)."""
        path = "/" + self.url.split("//", 1)[1].split("/", 1)[1]
        payload = body.encode() if isinstance(body, str) else body
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n"
        return await raw_http(self.url, head.encode() + payload)

    async def raw(self, method: str, params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        answer = await self.post(orjson.dumps(body))
        assert answer.status_code == 200
        result: dict[str, Any] = orjson.loads(answer.content)
        return result

    async def accounts(self, addresses: list[str]) -> list[Account | None]:
        keys = [Pubkey.from_string(a) for a in addresses]
        parsed = await self.call(GetMultipleAccounts(keys, BASE64), GetMultipleAccountsResp)
        return list(parsed.value)

    async def continue_to(self, slot: int, batch_index: int | None) -> Paused:
        index = "null" if batch_index is None else str(batch_index)
        await self.control.send(
            f'{{"method":"continueTo","params":{{"slot":{slot},"batchIndex":{index}}}}}'
        )
        paused = (await self.control.recv_until(Paused))[-1].message
        assert isinstance(paused, Paused)
        return paused

    async def advance(self, count: int = 1) -> None:
        await self.control.send(f'{{"method":"continue","params":{{"advanceCount":{count}}}}}')
        await self.control.recv_until(ReadyForContinue, Completed)


@asynccontextmanager
async def session(
    server: LocalServer, start: int = START, end: int = START + 20
) -> AsyncIterator[Session]:
    with trio.fail_after(60):
        async with (
            tcp_websocket(server.url, [(b"X-API-Key", SECRET_KEY.encode())]) as ws,
            httpx.AsyncClient() as http,
        ):
            control = Control(ws)
            created = await control.create(CreateSession(start_slot=start, end_slot=end))
            await control.recv_until(ReadyForContinue)
            url = server.url.replace("ws://", "http://", 1).rsplit("/backtest", 1)[0]
            yield Session(control, created.session_id, http, url + created.rpc_endpoint)


@asynccontextmanager
async def data_socket(server: LocalServer, s: Session) -> AsyncIterator[Data]:
    url = server.url.rsplit("/backtest", 1)[0] + f"/backtest/{s.id}"
    async with tcp_websocket(url) as ws:
        yield Data(ws)


def _spoofed_transfer(source: Pubkey, to: Pubkey, lamports: int) -> VersionedTransaction:
    # Signature verification is off on the simulator: any signature spoofs any signer.
    message = Message.new_with_blockhash(
        [transfer(TransferParams(from_pubkey=source, to_pubkey=to, lamports=lamports))],
        source,
        Hash.default(),
    )
    return VersionedTransaction.populate(message, [Signature(bytes(range(64)))])


async def test_every_method_answers_in_the_standard_shapes(tcp_server: LocalServer) -> None:
    ledger = tcp_server.ledger
    wallet = Pubkey.from_string(ledger.wallets[0])
    token = Pubkey.from_string(ledger.token_accounts[0])
    async with session(tcp_server) as s:
        info = await s.call(GetAccountInfo(wallet, BASE64), GetAccountInfoResp)
        assert info.context.slot == START
        assert info.value.owner == SYSTEM_ID
        balance = await s.call(GetBalance(wallet), GetBalanceResp)
        assert balance.value == info.value.lamports
        many = await s.call(
            GetMultipleAccounts([token, FRESH, wallet], BASE64), GetMultipleAccountsResp
        )
        assert many.value[0].owner == TOKEN_ID
        assert many.value[1] is None
        assert many.value[2] == info.value
        program = await s.call(GetAccountInfo(TOKEN_ID, BASE64), GetAccountInfoResp)
        assert program.value.executable
        mint = bytes(Pubkey.from_string(ledger.mint))
        config = RpcProgramAccountsConfig(BASE64, filters=[165, Memcmp(0, mint)])
        owned = await s.call(GetProgramAccounts(TOKEN_ID, config), GetProgramAccountsResp)
        assert sorted(str(a.pubkey) for a in owned.value) == sorted(ledger.token_accounts)
        assert (await s.call(GetSlot(), GetSlotResp)).value == START
        blockhash = await s.call(GetLatestBlockhash(), GetLatestBlockhashResp)
        assert str(blockhash.value.blockhash) == ledger.slot(START).blockhash

        await s.advance()
        first = ledger.slot(START).transactions[0]
        signature = Signature.from_string(first.signature)
        found = await s.call(GetTransaction(signature), GetTransactionResp)
        assert found.value.slot == START
        assert str(found.value.transaction.transaction.signatures[0]) == first.signature
        statuses = await s.call(
            GetSignatureStatuses([signature, Signature.default()]), GetSignatureStatusesResp
        )
        assert statuses.value[0].slot == START
        assert statuses.value[1] is None
        assert (await s.call(GetTransaction(Signature.default()), GetTransactionResp)).value is None

        upcoming = next(tx for tx in ledger.slot(START + 1).transactions if tx.succeeded)
        simulated = await s.call(
            SimulateVersionedTransaction(upcoming.transaction), SimulateTransactionResp
        )
        assert simulated.value.err is None
        assert simulated.value.logs
        fee = await s.call(GetFeeForMessage(upcoming.transaction.message), GetFeeForMessageResp)
        assert fee.value >= 5000
        # An unfunded payer learns its fee too: 5,000 lamports for its one signature.
        unfunded = _spoofed_transfer(Pubkey(bytes([9] * 32)), FRESH, 1).message
        assert (await s.call(GetFeeForMessage(unfunded), GetFeeForMessageResp)).value == 5000
        modified = await s.raw(
            "modifyAccounts",
            [{str(FRESH): _account_data(7_000_000)}],
        )
        assert modified == {"jsonrpc": "2.0", "result": None, "id": 1}
        assert (await s.accounts([str(FRESH)]))[0].lamports == 7_000_000
        # The bare object without the surrounding list is read too.
        bare = await s.raw("modifyAccounts", {str(FRESH): _account_data(8_000_000)})
        assert bare["result"] is None
        assert (await s.accounts([str(FRESH)]))[0].lamports == 8_000_000


def _account_data(lamports: int, data: bytes = b"") -> dict[str, Any]:
    return {
        "data": {"data": base64.b64encode(data).decode(), "encoding": "base64"},
        "executable": False,
        "lamports": lamports,
        "owner": str(SYSTEM_ID),
        "space": len(data),
    }


async def test_account_diffs_agree_with_reads_at_every_position(tcp_server: LocalServer) -> None:
    ledger = tcp_server.ledger
    programs = (ledger.programs[0], ledger.programs[1])  # Token and System own every account
    async with session(tcp_server) as s, data_socket(tcp_server, s) as data:
        for program in programs:
            await data.subscribe("accountDiffSubscribe", program, address_type="program")
        received: list[tuple[str, str]] = []
        latest: dict[str, dict[str, Any]] = {}
        for slot in (START, START + 1):
            count = len(ledger.slot(slot).transactions)
            for batch in (None, 1, count // 2, count):
                paused = await s.continue_to(slot, batch)
                assert paused.batch_index == batch
                # Every diff before the pause arrives, in order; reads show their posts.
                expected = [
                    (d.signature, d.account)
                    for number in range(START, slot + 1)
                    for d in ledger.slot(number).diffs
                    if number < slot or d.tx_index < (batch or 0)
                ]
                while len(received) < len(expected):
                    message = decode_rpc(await data.recv_raw())
                    assert isinstance(message, AccountDiffNotification)
                    received.append(message.result.key)
                    assert message.result.post is not None
                    latest[message.result.account] = dict(message.result.post)
                assert received == expected
                states = await s.accounts(list(latest))
                for post, state in zip(latest.values(), states, strict=True):
                    assert state is not None
                    assert state.lamports == post["lamports"]
                    assert base64.b64encode(bytes(state.data)).decode() == post["data"][0]
                    assert str(state.owner) == post["owner"]
            await s.advance()


async def test_a_driver_funds_a_spoofed_signer_simulates_and_sends(tcp_server: LocalServer) -> None:
    ledger = tcp_server.ledger
    slot = START + 2
    signer = Pubkey(bytes([9] * 32))  # nobody's key: the signature is spoofed
    target = Pubkey.from_string(ledger.wallets[3])
    tx = _spoofed_transfer(signer, target, 1_000_000)
    signature = Signature(bytes(range(64)))
    async with session(tcp_server) as s, data_socket(tcp_server, s) as data:
        await data.subscribe("transactionSubscribe", str(SYSTEM_ID))
        await s.continue_to(slot, 2)
        before = (await s.accounts([str(target)]))[0]
        assert before is not None

        # Unfunded, the preflight fails: -32002, with the simulation's logs in the data.
        failed = await s.post(SendVersionedTransaction(tx).to_json())
        error = SendTransactionResp.from_json(failed.text)
        assert isinstance(error, SendTransactionPreflightFailureMessage)
        assert orjson.loads(failed.content)["error"]["code"] == -32002
        assert error.data.logs is not None

        await s.raw("modifyAccounts", [{str(signer): _account_data(10**10)}])
        simulated = await s.call(SimulateVersionedTransaction(tx), SimulateTransactionResp)
        assert simulated.value.err is None
        assert any("invoke [1]" in line for line in simulated.value.logs)
        sent = await s.call(SendVersionedTransaction(tx), SendTransactionResp)
        assert sent.value == signature
        again = await s.call(SendVersionedTransaction(tx), SendTransactionResp)
        assert again.value == signature  # idempotent: queued once
        pending = await s.call(GetSignatureStatuses([signature]), GetSignatureStatusesResp)
        assert pending.value == [None]  # it runs after the slot's block transactions

        await s.advance()  # finishes the slot: its remaining block transactions, then ours
        found = await s.call(GetTransaction(signature), GetTransactionResp)
        assert found.value.slot == slot
        assert found.value.transaction.meta.err is None
        status = await s.call(GetSignatureStatuses([signature]), GetSignatureStatusesResp)
        assert status.value[0].slot == slot
        after = (await s.accounts([str(target)]))[0]
        assert after is not None
        assert after.lamports > before.lamports
        assert tcp_server.user_transactions(s.id) == (str(signature),)

        await s.advance()
        frames = await data.drain(idle=0.5)
        ours = [
            m
            for m in (decode_rpc(f) for f in frames)
            if isinstance(m, TransactionNotification) and m.result.signature == str(signature)
        ]
        assert len(ours) == 1
        assert ours[0].result.slot == slot
        assert ours[0].result.raw["meta"]["err"] is None
        # The resend after execution runs nothing either.
        assert (await s.call(SendVersionedTransaction(tx), SendTransactionResp)).value == signature
        await s.advance()
        assert tcp_server.user_transactions(s.id) == (str(signature),)


async def test_bad_input_gets_the_documented_answer(tcp_server: LocalServer) -> None:
    async with session(tcp_server) as s, session(tcp_server, START, START) as short:
        cases: list[tuple[bytes, int]] = [
            (b"not json", -32700),
            (b"[]", -32600),
            (b'"text"', -32600),
            (b'{"jsonrpc":"2.0","id":1}', -32600),
            (b'{"jsonrpc":"2.0","id":1,"method":"noSuchMethod"}', -32601),
            (b'{"jsonrpc":"2.0","id":1,"method":"getBalance","params":[5]}', -32602),
            (b'{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["nope"]}', -32602),
            (b'{"jsonrpc":"2.0","id":1,"method":"getBalance","params":"x"}', -32602),
            (b'{"jsonrpc":"2.0","id":1,"method":"sendTransaction","params":["AAAA"]}', -32602),
            (b'{"jsonrpc":"2.0","id":1,"method":"modifyAccounts","params":[{"x":1}]}', -32602),
            (b'{"jsonrpc":"2.0","id":1,"method":"getAccountInfo","params":['
             b'"11111111111111111111111111111111",{"encoding":"jsonParsed"}]}', -32602),
        ]  # fmt: skip
        for body, code in cases:
            answer = await s.post(body)
            assert answer.status_code == 200, body
            assert orjson.loads(answer.content)["error"]["code"] == code, body
        parsed = GetBalanceResp.from_json((await s.post(cases[5][0])).text)
        assert isinstance(parsed, InvalidParamsMessage)
        batch = await s.post(b'[{"jsonrpc":"2.0","id":1,"method":"getSlot"},7]')
        assert [item.get("result") for item in orjson.loads(batch.content)] == [START, None]
        huge = await s.post_raw(b" " * (tcp_server.config.max_http_body + 1))
        assert huge.startswith(b"HTTP/1.1 413 ")
        unknown = await s.http.post(s.url.rsplit("/", 1)[0] + "/nope", content=b"{}")
        assert unknown.status_code == 404
        await short.advance()  # completes that session
        gone = await short.post(GetSlot().to_json())
        assert (gone.status_code, gone.content) == (502, b"")
        # The other session is served as before.
        assert (await s.call(GetSlot(), GetSlotResp)).value == START
        calls = tcp_server.rpc_calls(short.id)
        assert [(c.method, c.status) for c in calls] == [("getSlot", 502)]
        assert calls[-1].headers["host"]  # as received, names lower-case


async def test_keep_alive_serves_many_requests_on_one_connection(tcp_server: LocalServer) -> None:
    async with session(tcp_server) as s:
        host, port = s.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        path = "/" + s.url.split("//", 1)[1].split("/", 1)[1]
        body = GetSlot().to_json().encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request * 3)  # pipelined
            answers = bytearray()
            with trio.fail_after(10):
                while answers.count(b'"result":' + str(START).encode()) < 3:
                    answers += await stream.receive_some()
        assert answers.count(b"HTTP/1.1 200 ") == 3


async def test_http_faults_fire_as_configured(tcp_server: LocalServer) -> None:
    async with session(tcp_server) as s:
        body = GetSlot().to_json()
        tcp_server.faults.http(bad_gateway=1.0, session_id=s.id)
        answer = await s.post(body)
        assert (answer.status_code, answer.content) == (502, b"")
        tcp_server.faults.http(drop=1.0, session_id=s.id)
        assert await s.post_raw(body) == b""
        tx = _spoofed_transfer(Pubkey.from_string(tcp_server.ledger.wallets[0]), FRESH, 10**6)
        tcp_server.faults.http(lose_answer=1.0, session_id=s.id)
        assert await s.post_raw(SendVersionedTransaction(tx).to_json()) == b""
        tcp_server.faults.http(delay=0.05, session_id=s.id)
        assert (await s.call(GetSlot(), GetSlotResp)).value == START
        tcp_server.faults.clear()
        # The lost answer's transaction was handled: it runs at the end of the slot.
        status = await s.call(GetSignatureStatuses([tx.signatures[0]]), GetSignatureStatusesResp)
        assert status.value == [None]
        await s.advance()
        assert tcp_server.user_transactions(s.id) == (str(tx.signatures[0]),)
        calls = tcp_server.rpc_calls(s.id)
        assert [(c.method, c.status, c.fault) for c in calls[:4]] == [
            ("getSlot", 502, "bad_gateway"),
            ("getSlot", 0, "drop"),
            ("sendTransaction", 0, "lose_answer"),
            ("getSlot", 200, None),
        ]
        stats = tcp_server.statistics().faults_fired
        assert (stats["http_bad_gateway"], stats["http_drop"], stats["http_lose_answer"]) == (
            1,
            1,
            1,
        )
    with pytest.raises(ValueError, match="exceed 1"):
        tcp_server.faults.http(drop=0.6, bad_gateway=0.6)


async def test_http_fault_rates_are_seeded(tcp_server: LocalServer) -> None:
    fates: list[list[int]] = []
    async with session(tcp_server) as s:
        for _ in range(2):
            tcp_server.faults.http(bad_gateway=0.5, seed=4, session_id=s.id)
            fates.append([(await s.post(GetSlot().to_json())).status_code for _ in range(20)])
    assert fates[0] == fates[1]
    assert set(fates[0]) == {200, 502}


async def test_available_ranges_need_the_key(tcp_server: LocalServer) -> None:
    url = tcp_server.url.replace("ws://", "http://", 1).rsplit("/backtest", 1)[0]
    async with httpx.AsyncClient() as http:
        ranges = await http.get(url + "/available-ranges", headers={"X-API-Key": SECRET_KEY})
        assert ranges.status_code == 200
        listed = ranges.json()
        assert listed[:2] == [
            {"bundleStartSlot": 0, "maxBundleEndSlot": 99, "snapshotSlot": 0},
            {"bundleStartSlot": 100, "maxBundleEndSlot": 199, "snapshotSlot": 100},
        ]
        assert len(listed) == tcp_server.config.ranges_count
        for headers in ({}, {"X-API-Key": "wrong"}):
            refused = await http.get(url + "/available-ranges", headers=headers)
            assert refused.status_code == 401


async def test_sessions_share_a_chain_until_one_acts(tcp_server: LocalServer) -> None:
    wallet = tcp_server.ledger.slot(START).transactions[0].fee_payer  # written at START
    async with session(tcp_server) as a, session(tcp_server) as b:
        at_start = await a.accounts([wallet])
        await a.advance(3)
        later = await a.accounts([wallet])
        assert later != at_start
        assert (await b.accounts([wallet])) == at_start  # each reads at its own position
        await b.advance(3)
        assert (await b.accounts([wallet])) == later
        await b.raw("modifyAccounts", [{wallet: _account_data(1)}])
        assert (await b.accounts([wallet]))[0].lamports == 1  # type: ignore[union-attr]
        assert (await a.accounts([wallet])) == later  # b forked: a is untouched
        await a.advance(1)
        await b.advance(1)
        assert (await a.accounts([wallet])) != (await b.accounts([wallet]))


async def test_the_memory_transport_serves_rpc_in_virtual_time(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=START, slot_count=3))
        await control.recv_until(ReadyForContinue)
        transport = server.http_transport()
        async with httpx.AsyncClient(transport=transport, base_url="http://local") as http:
            server.faults.http(delay=2.5, session_id=created.session_id)
            began = trio.current_time()
            answer = await http.post(created.rpc_endpoint, content=GetSlot().to_json())
            assert trio.current_time() - began == pytest.approx(2.5)
            assert GetSlotResp.from_json(answer.text).value == START
            server.faults.http(drop=1.0, session_id=created.session_id)
            with pytest.raises(httpx.TransportError):
                await http.post(created.rpc_endpoint, content=GetSlot().to_json())
            ranges = await http.get("/available-ranges", headers={"X-API-Key": SECRET_KEY})
            assert ranges.status_code == 200
        nursery.cancel_scope.cancel()


async def test_chaos_configures_http_faults_too(autojump_clock: trio.testing.MockClock) -> None:
    chaos = ChaosConfig(seed=2, http_bad_gateway=1.0)
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, chaos=chaos) as server,
        trio.open_nursery() as nursery,
    ):
        control = await open_control(server, nursery)
        created = await control.create(CreateSession(start_slot=START, slot_count=3))
        await control.recv_until(ReadyForContinue)
        async with httpx.AsyncClient(transport=server.http_transport()) as http:
            url = "http://local" + created.rpc_endpoint
            answer = await http.post(url, content=GetSlot().to_json())
            assert (answer.status_code, answer.content) == (502, b"")
            server.faults.clear()
            assert (await http.post(url, content=GetSlot().to_json())).status_code == 200
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="must not exceed 1"):
        ChaosConfig(http_drop=0.5, http_lose_answer=0.3, http_bad_gateway=0.3)
