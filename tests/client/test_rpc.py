"""`SessionRpc` against a scripted data plane (``httpx.MockTransport``), on virtual time.

Answers are built with solders' own response types; the retry schedule and the wire
shapes expected here are written down from dataplane.md §2 and protocol.md §6.
"""

from __future__ import annotations

import base64
import itertools
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import (
    GetAccountInfoResp,
    GetBalanceResp,
    GetLatestBlockhashResp,
    GetMultipleAccountsResp,
    GetProgramAccountsResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    RpcBlockhash,
    RpcKeyedAccount,
    RpcResponseContext,
    RpcSimulateTransactionResult,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_status import TransactionConfirmationStatus, TransactionStatus

from trio_backtest import (
    AccountData,
    ClientConfig,
    ProtocolError,
    RpcError,
    RpcUnavailableError,
    SessionRpc,
)
from trio_backtest._rpc import http_endpoint, open_session_rpc

ENDPOINT = "ws://dataplane.test/backtest/session-id-is-the-secret"
SYSTEM = "11111111111111111111111111111111"
WALLET = Keypair.from_seed(bytes([7] * 32))
OTHER = Pubkey.from_string("9wFFyRfZBsuAha4YcuxcXLKwMxJR43S7fPfQLusDBzvT")
CONTEXT = RpcResponseContext(1_234)
#: Seconds between the tries of a call: 0.3 s x the number of the failed try.
SCHEDULE = [0.3, 0.6, 0.9, 1.2]

Step = Callable[[dict[str, Any]], httpx.Response]


def answer(resp: Any, request: dict[str, Any]) -> httpx.Response:
    """A solders response, with the request's id."""
    envelope = orjson.loads(resp.to_json())
    envelope["id"] = request["id"]
    return httpx.Response(200, content=orjson.dumps(envelope))


def raw(status: int, body: bytes = b"") -> Step:
    return lambda _request: httpx.Response(status, content=body)


def fail(exc_type: type[httpx.TransportError]) -> Step:
    def step(request: dict[str, Any]) -> httpx.Response:
        raise exc_type("scripted failure")

    return step


def rpc_error(code: int, message: str, data: Any = None) -> Step:
    return lambda request: httpx.Response(
        200,
        content=orjson.dumps(
            {
                "jsonrpc": "2.0",
                "id": request["id"],
                "error": {"code": code, "message": message, "data": data},
            }
        ),
    )


@attrs.define
class FakeDataPlane:
    """Answers each method from a script, then with ``default``; records every request."""

    defaults: dict[str, Step] = attrs.Factory(dict)
    scripts: dict[str, list[Step]] = attrs.Factory(dict)
    requests: list[tuple[float, str, Any]] = attrs.Factory(list)
    headers: list[httpx.Headers] = attrs.Factory(list)
    urls: list[str] = attrs.Factory(list)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        body = orjson.loads(request.content)
        self.requests.append((trio.current_time(), body["method"], body.get("params")))
        self.headers.append(request.headers)
        self.urls.append(str(request.url))
        script = self.scripts.get(body["method"])
        step = script.pop(0) if script else self.defaults[body["method"]]
        return step(body)

    def times(self, method: str) -> list[float]:
        return [t for t, m, _ in self.requests if m == method]

    def gaps(self, method: str) -> list[float]:
        """Seconds between successive requests of ``method``."""
        return [b - a for a, b in itertools.pairwise(self.times(method))]

    def params(self, method: str) -> list[Any]:
        return [p for _, m, p in self.requests if m == method]


GONE = raw(404)


def balance(lamports: int) -> Step:
    return lambda request: answer(GetBalanceResp(lamports, CONTEXT), request)


@pytest.fixture
async def plane() -> FakeDataPlane:
    return FakeDataPlane(defaults={"getBalance": balance(42)})


@pytest.fixture
async def rpc(plane: FakeDataPlane) -> AsyncIterator[SessionRpc]:
    async with open_session_rpc(ENDPOINT, transport=httpx.MockTransport(plane)) as rpc:
        yield rpc


def signed_transfer(lamports: int) -> VersionedTransaction:
    ix = transfer(TransferParams(from_pubkey=WALLET.pubkey(), to_pubkey=OTHER, lamports=lamports))
    message = MessageV0.try_compile(WALLET.pubkey(), [ix], [], Hash.default())
    return VersionedTransaction(message, [WALLET])


# ---------------------------------------------------------------- shapes


def test_the_endpoint_is_the_data_plane_over_http() -> None:
    assert http_endpoint("ws://h:1/backtest/abc") == "http://h:1/backtest/abc"
    assert http_endpoint("wss://h/backtest/abc?x=1") == "https://h/backtest/abc?x=1"
    with pytest.raises(ValueError, match="not a ws"):
        http_endpoint("ftp://h/backtest/abc")


async def test_reads_send_solders_requests_and_return_solders_values(
    plane: FakeDataPlane, rpc: SessionRpc
) -> None:
    account = Account(5_000, b"\x01\x02", Pubkey.from_string(SYSTEM), False)
    blockhash = Hash.new_unique()
    plane.defaults |= {
        "getAccountInfo": lambda r: answer(GetAccountInfoResp(account, CONTEXT), r),
        "getMultipleAccounts": lambda r: answer(
            GetMultipleAccountsResp([account, None], CONTEXT), r
        ),
        "getProgramAccounts": lambda r: answer(
            GetProgramAccountsResp([RpcKeyedAccount(OTHER, account)]), r
        ),
        "getLatestBlockhash": lambda r: answer(
            GetLatestBlockhashResp(RpcBlockhash(blockhash, 99), CONTEXT), r
        ),
        "getSlot": lambda r: answer(GetSlotResp(1_234), r),
    }
    assert await rpc.get_account_info(OTHER) == account
    assert await rpc.get_multiple_accounts([str(OTHER), WALLET.pubkey()]) == [account, None]
    assert await rpc.get_balance(str(OTHER)) == 42
    assert await rpc.get_program_accounts(SYSTEM) == [(OTHER, account)]
    assert await rpc.get_latest_blockhash() == blockhash
    assert await rpc.get_slot() == 1_234

    (info,) = plane.params("getAccountInfo")
    assert info[0] == str(OTHER)
    assert info[1]["encoding"] == "base64"
    (multiple,) = plane.params("getMultipleAccounts")
    assert multiple[0] == [str(OTHER), str(WALLET.pubkey())]
    assert multiple[1]["encoding"] == "base64"
    (program,) = plane.params("getProgramAccounts")
    assert program[0] == SYSTEM
    assert program[1]["encoding"] == "base64"
    assert plane.params("getBalance") == [[str(OTHER)]]
    assert plane.urls[0] == "http://dataplane.test/backtest/session-id-is-the-secret"
    for headers in plane.headers:
        assert headers["content-type"] == "application/json"
        assert not {"x-api-key", "authorization"} & set(headers)


async def test_transactions_go_as_base64_whatever_their_form(
    plane: FakeDataPlane, rpc: SessionRpc
) -> None:
    versioned = signed_transfer(10)
    text = base64.b64encode(bytes(versioned)).decode()
    legacy = Transaction(
        [WALLET],
        Message(
            [transfer(TransferParams(from_pubkey=WALLET.pubkey(), to_pubkey=OTHER, lamports=1))]
        ),
        Hash.default(),
    )
    result = RpcSimulateTransactionResult(None, ["Program log: hi"], None, 150, None, None, None)
    plane.defaults |= {
        "simulateTransaction": lambda r: answer(SimulateTransactionResp(result, CONTEXT), r),
        "sendTransaction": lambda r: answer(
            SendTransactionResp(
                VersionedTransaction.from_bytes(base64.b64decode(r["params"][0])).signatures[0]
            ),
            r,
        ),
    }
    assert (await rpc.simulate_transaction(versioned)).logs == ["Program log: hi"]
    assert (await rpc.simulate_transaction(legacy)).units_consumed == 150
    assert await rpc.send_transaction(text) == versioned.signatures[0]
    assert await rpc.send_transaction(legacy) == legacy.signatures[0]

    simulated = plane.params("simulateTransaction")
    assert simulated[0][0] == text
    assert simulated[1][0] == base64.b64encode(bytes(legacy)).decode()
    for params in simulated:
        assert params[1]["encoding"] == "base64"
        assert params[1]["sigVerify"] is False
    sent = plane.params("sendTransaction")
    assert sent[0][0] == text
    assert [p[1]["encoding"] for p in sent] == ["base64", "base64"]


async def test_modify_accounts_sends_account_data_by_address(
    plane: FakeDataPlane, rpc: SessionRpc
) -> None:
    plane.defaults["modifyAccounts"] = lambda r: httpx.Response(
        200, content=orjson.dumps({"jsonrpc": "2.0", "id": r["id"], "result": None})
    )
    funded = Account(50_000_000_000, b"", Pubkey.from_string(SYSTEM), False)
    token = AccountData(data="AQI=", executable=False, lamports=7, owner=SYSTEM, space=2)
    assert await rpc.modify_accounts({WALLET.pubkey(): funded, str(OTHER): token}) is None
    assert plane.params("modifyAccounts") == [
        [
            {
                str(WALLET.pubkey()): {
                    "data": {"data": "", "encoding": "base64"},
                    "executable": False,
                    "lamports": 50_000_000_000,
                    "owner": SYSTEM,
                    "space": 0,
                },
                str(OTHER): {
                    "data": {"data": "AQI=", "encoding": "base64"},
                    "executable": False,
                    "lamports": 7,
                    "owner": SYSTEM,
                    "space": 2,
                },
            }
        ]
    ]


async def test_call_returns_the_raw_result(plane: FakeDataPlane, rpc: SessionRpc) -> None:
    plane.defaults["getVersion"] = lambda r: httpx.Response(
        200, json={"jsonrpc": "2.0", "id": r["id"], "result": {"solana-core": "2.1.0"}}
    )
    assert await rpc.call("getVersion") == {"solana-core": "2.1.0"}
    assert await rpc.call("getBalance", [SYSTEM]) == {"context": {"slot": 1_234}, "value": 42}
    assert plane.params("getVersion") == [None]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda rpc: rpc.get_balance("not base58!"), ValueError, "not a base58 address"),
        (lambda rpc: rpc.get_balance(42), TypeError, "Pubkey or a base58 str"),
        (lambda rpc: rpc.get_multiple_accounts(SYSTEM), TypeError, "not a single one"),
        (lambda rpc: rpc.get_signature_statuses("1" * 88), TypeError, "not a single one"),
        (lambda rpc: rpc.get_transaction("nope"), ValueError, "not a base58 signature"),
        (lambda rpc: rpc.send_transaction("%%%"), ValueError, "not a base64 serialized"),
        (lambda rpc: rpc.simulate_transaction(b"\x01"), TypeError, "VersionedTransaction"),
        (lambda rpc: rpc.modify_accounts({SYSTEM: 5}), TypeError, "AccountData or a solders"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_sent(
    plane: FakeDataPlane, rpc: SessionRpc, call: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        await call(rpc)
    assert plane.requests == []


# ---------------------------------------------------------------- what an answer means


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(fail(httpx.ConnectError), id="connect-error"),
        pytest.param(fail(httpx.ReadError), id="dropped-connection"),
        pytest.param(fail(httpx.RemoteProtocolError), id="closed-without-answer"),
        pytest.param(raw(200), id="empty-200"),
        pytest.param(raw(502), id="empty-502"),
        pytest.param(raw(503, b"overloaded"), id="503"),
        pytest.param(raw(504, b"<html>gateway timeout</html>"), id="504"),
    ],
)
async def test_reads_are_retried_on_what_protocol_md_calls_transient(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock, failure: Step
) -> None:
    plane.scripts["getBalance"] = [failure, failure]
    assert await rpc.get_balance(SYSTEM) == 42
    assert plane.gaps("getBalance") == pytest.approx(SCHEDULE[:2])


async def test_reads_give_up_after_five_tries(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock
) -> None:
    plane.defaults["getBalance"] = raw(502)
    with pytest.raises(RpcUnavailableError, match=r"no answer after 5 tries \(last: HTTP 502\)"):
        await rpc.get_balance(SYSTEM)
    assert plane.gaps("getBalance") == pytest.approx(SCHEDULE)


async def test_a_try_without_answer_times_out_and_is_retried(
    plane: FakeDataPlane, autojump_clock: trio.abc.Clock
) -> None:
    hung_at: list[float] = []

    async def first_hangs(request: httpx.Request) -> httpx.Response:
        if not hung_at:
            hung_at.append(trio.current_time())
            await trio.sleep_forever()
        return await plane(request)

    async with open_session_rpc(ENDPOINT, transport=httpx.MockTransport(first_hangs)) as rpc:
        assert await rpc.get_balance(SYSTEM) == 42
    # 30 s for the try that hung, then the first retry interval.
    assert plane.times("getBalance") == pytest.approx([hung_at[0] + 30 + SCHEDULE[0]])


async def test_a_refused_certificate_is_not_retried(plane: FakeDataPlane) -> None:
    def refused(request: dict[str, Any]) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed")
        except ssl.SSLError as exc:
            raise httpx.ConnectError(str(exc)) from exc

    plane.defaults["getBalance"] = refused
    async with open_session_rpc(ENDPOINT, transport=httpx.MockTransport(plane)) as rpc:
        with pytest.raises(RpcUnavailableError, match="certificate was refused"):
            await rpc.get_balance(SYSTEM)
    assert len(plane.requests) == 1


@pytest.mark.parametrize(
    ("step", "error", "fragment"),
    [
        (GONE, RpcUnavailableError, "does not know this session"),
        (raw(500, b"internal"), RpcUnavailableError, "answered HTTP 500"),
        (raw(200, b"<html>"), ProtocolError, "not a JSON-RPC response"),
        (raw(200, b'{"jsonrpc":"2.0","id":1,"result":{"value":"x"}}'), ProtocolError, "Solana"),
        (raw(200, b'{"jsonrpc":"2.0","id":999,"result":1}'), ProtocolError, "request 999"),
        (raw(200, b'{"jsonrpc":"2.0","id":1,"error":"bad"}'), ProtocolError, "must be an object"),
        (rpc_error(-32602, "bad params", {"why": 1}), RpcError, "-32602: bad params"),
    ],
)
async def test_final_answers_are_not_retried(
    plane: FakeDataPlane,
    rpc: SessionRpc,
    step: Step,
    error: type[Exception],
    fragment: str,
) -> None:
    plane.defaults["getBalance"] = step
    with pytest.raises(error, match=fragment) as info:
        await rpc.get_balance(SYSTEM)
    assert len(plane.requests) == 1
    if step is GONE:  # a session the server does not know stays gone, without asking
        with pytest.raises(RpcUnavailableError, match="does not know this session"):
            await rpc.get_slot()
        assert len(plane.requests) == 1
    assert not isinstance(info.value, httpx.HTTPError)
    if isinstance(info.value, RpcError):
        assert (info.value.code, info.value.message, info.value.data) == (
            -32602,
            "bad params",
            {"why": 1},
        )
        assert info.value.method == "getBalance"


async def test_an_answer_over_the_size_limit_is_refused(plane: FakeDataPlane) -> None:
    huge = {"context": {"slot": 1}, "value": [None] * 20_000}  # about 100 KB
    plane.defaults["getMultipleAccounts"] = lambda r: httpx.Response(
        200, json={"jsonrpc": "2.0", "id": r["id"], "result": huge}
    )
    config = ClientConfig(max_message_size=64 * 1024)
    transport = httpx.MockTransport(plane)
    async with open_session_rpc(ENDPOINT, config=config, transport=transport) as rpc:
        with pytest.raises(ProtocolError, match=r"larger than max_message_size \(65536 bytes\)"):
            await rpc.get_multiple_accounts([SYSTEM])
        assert await rpc.get_balance(SYSTEM) == 42  # the next call is not affected
    assert len(plane.requests) == 2


async def test_modify_accounts_is_retried_like_a_read(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock
) -> None:
    ok = lambda r: httpx.Response(200, json={"jsonrpc": "2.0", "id": r["id"], "result": None})  # noqa: E731
    plane.scripts["modifyAccounts"] = [raw(502), fail(httpx.ReadError), ok]
    await rpc.modify_accounts({OTHER: AccountData("", False, 1, SYSTEM, 0)})
    assert len(plane.times("modifyAccounts")) == 3


async def test_call_never_retries_a_send_whose_answer_was_lost(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock
) -> None:
    plane.defaults["sendTransaction"] = raw(502)
    with pytest.raises(RpcUnavailableError, match="may or may not have acted"):
        await rpc.call("sendTransaction", ["AAAA"])
    assert len(plane.requests) == 1


# ---------------------------------------------------------------- sendTransaction


def statuses(*seen: bool) -> list[Step]:
    found = TransactionStatus(7, None, None, None, TransactionConfirmationStatus.Processed)
    return [
        (lambda r, s=s: answer(GetSignatureStatusesResp([found if s else None], CONTEXT), r))
        for s in seen
    ]


def lost_after_handling(executed: list[str]) -> Step:
    """The server takes the transaction, then the connection drops before the answer."""

    def step(request: dict[str, Any]) -> httpx.Response:
        executed.append(request["params"][0])
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    return step


@pytest.fixture
def ledger(plane: FakeDataPlane) -> list[str]:
    """Transactions the fake executed; sending one it has is answered, not repeated."""
    executed: list[str] = []

    def send(request: dict[str, Any]) -> httpx.Response:
        tx = request["params"][0]
        if tx not in executed:
            executed.append(tx)
        signature = VersionedTransaction.from_bytes(base64.b64decode(tx)).signatures[0]
        return answer(SendTransactionResp(signature), request)

    plane.defaults["sendTransaction"] = send
    return executed


async def test_a_lost_send_the_server_has_seen_is_not_sent_again(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str], autojump_clock: trio.abc.Clock
) -> None:
    tx = signed_transfer(1)
    plane.scripts["sendTransaction"] = [lost_after_handling(ledger)]
    plane.scripts["getSignatureStatuses"] = statuses(True)
    assert await rpc.send_transaction(tx) == tx.signatures[0]
    assert len(plane.times("sendTransaction")) == 1
    assert plane.params("getSignatureStatuses")[0][0] == [str(tx.signatures[0])]
    assert len(ledger) == 1


async def test_a_lost_send_the_server_has_not_seen_is_sent_once_more(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str], autojump_clock: trio.abc.Clock
) -> None:
    tx = signed_transfer(2)
    plane.scripts["sendTransaction"] = [fail(httpx.ReadError)]
    plane.scripts["getSignatureStatuses"] = statuses(False)
    assert await rpc.send_transaction(tx) == tx.signatures[0]
    assert plane.gaps("sendTransaction") == pytest.approx(SCHEDULE[:1])
    assert len(ledger) == 1


async def test_a_send_that_never_connected_is_sent_again_without_asking(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str], autojump_clock: trio.abc.Clock
) -> None:
    plane.scripts["sendTransaction"] = [fail(httpx.ConnectError)]
    await rpc.send_transaction(signed_transfer(3))
    assert len(plane.times("sendTransaction")) == 2
    assert plane.times("getSignatureStatuses") == []


async def test_a_resend_answered_already_processed_is_the_lost_one(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str], autojump_clock: trio.abc.Clock
) -> None:
    tx = signed_transfer(4)
    plane.scripts["sendTransaction"] = [
        lost_after_handling(ledger),
        rpc_error(-32002, "Transaction simulation failed", {"err": "AlreadyProcessed"}),
    ]
    plane.scripts["getSignatureStatuses"] = statuses(False)
    assert await rpc.send_transaction(tx) == tx.signatures[0]
    assert len(ledger) == 1


async def test_a_lost_send_whose_status_is_unknown_is_a_clear_error(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str], autojump_clock: trio.abc.Clock
) -> None:
    tx = signed_transfer(5)
    plane.scripts["sendTransaction"] = [lost_after_handling(ledger)]
    plane.defaults["getSignatureStatuses"] = raw(502)
    with pytest.raises(RpcUnavailableError, match="may or may not execute") as info:
        await rpc.send_transaction(tx)
    assert info.value.signature == tx.signatures[0]
    assert len(plane.times("sendTransaction")) == 1
    assert len(plane.times("getSignatureStatuses")) == 5


async def test_a_send_never_seen_after_five_tries_is_a_clear_error(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock
) -> None:
    tx = signed_transfer(6)
    plane.defaults["sendTransaction"] = raw(502)
    plane.defaults["getSignatureStatuses"] = lambda r: answer(
        GetSignatureStatusesResp([None], CONTEXT), r
    )
    with pytest.raises(RpcUnavailableError, match="has not seen transaction") as info:
        await rpc.send_transaction(tx)
    assert info.value.signature == tx.signatures[0]
    assert plane.gaps("sendTransaction") == pytest.approx(SCHEDULE)


async def test_a_failed_preflight_is_an_rpc_error_and_not_resent(
    plane: FakeDataPlane, rpc: SessionRpc, ledger: list[str]
) -> None:
    plane.scripts["sendTransaction"] = [
        rpc_error(-32002, "Transaction simulation failed", {"err": "AccountNotFound"})
    ]
    with pytest.raises(RpcError) as info:
        await rpc.send_transaction(signed_transfer(7))
    assert info.value.code == -32002
    assert info.value.data == {"err": "AccountNotFound"}
    assert len(plane.requests) == 1


# ---------------------------------------------------------------- the session's lifetime


def session_rpc(plane: FakeDataPlane, completed: trio.Event) -> SessionRpc:
    """A `SessionRpc` as a session builds it: told when the session completes."""
    return SessionRpc(
        lambda: ENDPOINT,
        config=ClientConfig(),
        completed=completed,
        transport=httpx.MockTransport(plane),
    )


async def test_after_completion_calls_fail_at_once_without_a_request(
    plane: FakeDataPlane, autojump_clock: trio.abc.Clock
) -> None:
    completed = trio.Event()
    rpc = session_rpc(plane, completed)
    plane.scripts["getBalance"] = [raw(502)]
    async with trio.open_nursery() as nursery:
        await nursery.start(rpc.run)
        async with trio.open_nursery() as calls:

            async def read() -> None:
                with pytest.raises(RpcUnavailableError, match="has completed"):
                    await rpc.get_balance(SYSTEM)

            calls.start_soon(read)
            await trio.sleep(0.1)  # the read has had its 502 and waits 0.3 s to retry
            began = trio.current_time()
            completed.set()
        assert trio.current_time() == began  # the wait was cut short
        with pytest.raises(RpcUnavailableError, match="has completed"):
            await rpc.get_slot()
        nursery.cancel_scope.cancel()
    assert len(plane.requests) == 1
    with pytest.raises(RpcUnavailableError, match="has completed"):
        await rpc.get_slot()


async def test_completion_counts_even_before_the_pool_keeper_has_seen_it(
    plane: FakeDataPlane,
) -> None:
    completed = trio.Event()
    rpc = session_rpc(plane, completed)
    async with trio.open_nursery() as nursery:
        await nursery.start(rpc.run)
        completed.set()  # and at once, with no checkpoint in between, a call
        with pytest.raises(RpcUnavailableError, match="has completed"):
            await rpc.get_balance(SYSTEM)
        nursery.cancel_scope.cancel()
    assert plane.requests == []


async def test_after_the_block_calls_fail_at_once(plane: FakeDataPlane) -> None:
    async with open_session_rpc(ENDPOINT, transport=httpx.MockTransport(plane)) as rpc:
        assert await rpc.get_balance(SYSTEM) == 42
    with pytest.raises(RpcUnavailableError, match="is closed"):
        await rpc.get_balance(SYSTEM)
    assert len(plane.requests) == 1
    assert "session-id" not in repr(rpc)


async def test_a_cancelled_call_leaves_the_others_working(
    plane: FakeDataPlane, rpc: SessionRpc, autojump_clock: trio.abc.Clock
) -> None:
    gate = trio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        if orjson.loads(request.content)["method"] == "getSlot":
            gate.set()
            await trio.sleep_forever()
        return await plane(request)

    async with open_session_rpc(ENDPOINT, transport=httpx.MockTransport(handler)) as shared:
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(shared.get_slot)
                await gate.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        results = []
        async with trio.open_nursery() as nursery:
            for _ in range(120):
                nursery.start_soon(lambda: _append(results, shared.get_balance(SYSTEM)))
        assert results == [42] * 120


async def _append(results: list[int], call: Any) -> None:
    results.append(await call)
