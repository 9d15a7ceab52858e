"""Golden tests: every documented message decodes to its model and encodes back.

The JSON here is the wire as protocol.md documents it. Comparisons are on parsed
JSON, never on strings, so key order and whitespace do not matter.
"""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from trio_backtest.protocol import (
    ERROR_VARIANTS,
    INVALID_PARAMS,
    KNOWN_STATUSES,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    REPLAY_WINDOW_EXCEEDED,
    AccountData,
    AccountDiffNotification,
    AccountDiffPayload,
    AccountDiffSubscribe,
    AccountDiffUnsubscribe,
    AdvanceSlotFailed,
    AttachBacktestSession,
    AttachParallelControlSessionV2,
    ClerkError,
    CloseBacktestSession,
    CloseSessionV1,
    Completed,
    Continue,
    ContinueParams,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSession,
    CreateSessionParams,
    Discovery,
    DiscoveryBatch,
    InitializingSysvarsFailed,
    Internal,
    InvalidAccountEncoding,
    InvalidAccountOwner,
    InvalidAccountPubkey,
    InvalidBlockhashFormat,
    InvalidRequest,
    InvalidTransactionEncoding,
    InvalidTransactionFormat,
    NoMoreBlocks,
    ParallelSessionAttachedV2,
    Paused,
    ProtocolError,
    ReadyForContinue,
    ResumeAttachedSession,
    RpcError,
    RpcResult,
    Sequenced,
    ServerError,
    SessionAttached,
    SessionCreated,
    SessionEventV2,
    SessionNotFound,
    SessionOwnerMismatch,
    SessionsCreatedV2,
    SimulationError,
    Slot,
    Status,
    Success,
    TransactionNotification,
    TransactionPayload,
    TransactionSubscribe,
    TransactionUnsubscribe,
    UnknownBacktestError,
    UnknownMessage,
    decode_control,
    decode_rpc,
    encode_control,
    encode_rpc,
)

Json = dict[str, Any]

# ---------------------------------------------------------------- realistic values

JUPITER = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4"
TOKEN_PROGRAM = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
SYSTEM_PROGRAM = "11111111111111111111111111111111"
WALLET = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
TOKEN_ACCOUNT = "9wFFyRfZBsuAha4YcuxcXLKwMxJR43S7fPfQLusDBzvT"
BOT_SIGNER = "HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH"
SIGNATURE = (
    "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW"
)
TX_1 = "AVXo5X7WnTBgZ2uOXzd1QmAiM4z8QNxQ+dEpIpm2R4YvAQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
TX_2 = "AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fIEFCREVGR0hJSktMTU5PUFFSU1RVVldYWVpbXF1eXw=="
#: A bincode-serialized v0 ``VersionedTransaction``: WALLET sends 1,000 lamports to
#: TOKEN_ACCOUNT through the system program, signed with SIGNATURE.
TRANSFER_V0 = (
    "AeBp7y++SHKY8i/+y+1XpF3lVRYNcVLx+cMmnN4F5Cj8ql5iL3J8RcvVRGr1B65jlMq446TgeHKJaYgiWDtHnA+A"
    "AQABA2dSBVwgs+nYdGZW3fc4VVB/h6tth1I+THan+jYJapnrhML7GK7WGfVGYyZT7wYCnwKoZL84KYZxgbsg3x1x"
    "XDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADlz4zDCm4MfP8sOSTdO2NA4j0EKI+Tr8jMoUFA2770D"
    "AQICAAEMAgAAAOgDAAAAAAAAAA=="
)
SESSION = "q3YJ0pXv7Zb1sK9mN2wR4g"
SESSION_B = "Zt8cH1uQe5LwA0nVb3yXkQ"
CONTROL_SESSION = "c-4fJ2mQ9sLx7RtV1pW8nA"
START = 300_000_000
END = 300_000_099


def frame(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def parsed(text: str) -> Any:
    return orjson.loads(text)


# ---------------------------------------------------------------- client -> server (§2.1)

FULL_CREATE_PARAMS: Json = {
    "startSlot": START,
    "endSlot": START + 100,
    "signerFilter": [BOT_SIGNER, WALLET],
    "sendSummary": True,
    "disconnectTimeoutSecs": 120,
    "capacityWaitTimeoutSecs": 30,
    "extraComputeUnits": 200_000,
    "discoveries": [{"programExecuted": JUPITER}, {"programExecuted": TOKEN_PROGRAM}],
    "priorityFeeMode": {"percentile": 75},
}
FULL_CREATE_MODEL = CreateSession(
    start_slot=START,
    slot_count=100,
    signer_filter=[BOT_SIGNER, WALLET],
    send_summary=True,
    disconnect_timeout_secs=120,
    capacity_wait_timeout_secs=30,
    extra_compute_units=200_000,
    discoveries=[JUPITER, Discovery(TOKEN_PROGRAM)],
    extra={"priorityFeeMode": {"percentile": 75}},
)

ACCOUNT_WIRE: Json = {
    "data": {"data": "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "encoding": "base64"},
    "executable": False,
    "lamports": 2_039_280,
    "owner": TOKEN_PROGRAM,
    "space": 165,
}
ACCOUNT_MODEL = AccountData(
    data="AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    executable=False,
    lamports=2_039_280,
    owner=TOKEN_PROGRAM,
    space=165,
)
FUNDED_WALLET_WIRE: Json = {
    "data": {"data": "", "encoding": "base64"},
    "executable": False,
    "lamports": 50_000_000_000,
    "owner": SYSTEM_PROGRAM,
    "space": 0,
}
FUNDED_WALLET_MODEL = AccountData(
    data="", executable=False, lamports=50_000_000_000, owner=SYSTEM_PROGRAM, space=0
)
FULL_CONTINUE_WIRE: Json = {
    "advanceCount": 5,
    "transactions": [TX_1, TX_2],
    "modifyAccountStates": {TOKEN_ACCOUNT: ACCOUNT_WIRE, WALLET: FUNDED_WALLET_WIRE},
}
FULL_CONTINUE_MODEL = ContinueParams(
    advance_count=5,
    transactions=(TX_1, TX_2),
    modify_account_states={TOKEN_ACCOUNT: ACCOUNT_MODEL, WALLET: FUNDED_WALLET_MODEL},
)
DEFAULT_CONTINUE_WIRE: Json = {"advanceCount": 1, "transactions": [], "modifyAccountStates": {}}

CLIENT_CASES = [
    pytest.param(
        {"method": "createBacktestSession", "params": {"startSlot": START, "endSlot": END}},
        CreateBacktestSession(CreateSessionParams(start_slot=START, end_slot=END)),
        id="create-minimal",
    ),
    pytest.param(
        {"method": "createBacktestSession", "params": FULL_CREATE_PARAMS},
        CreateBacktestSession(FULL_CREATE_MODEL),
        id="create-every-key",
    ),
    pytest.param(
        {
            "method": "createBacktestSession",
            "params": {
                "startSlot": START,
                "endSlot": END,
                "disconnectTimeoutSecs": 300,
                "parallel": True,
            },
        },
        CreateBacktestSession(
            CreateSession(start_slot=START, end_slot=END, disconnect_timeout_secs=300),
            parallel=True,
        ),
        id="create-parallel",
    ),
    pytest.param(
        {"method": "continue", "params": DEFAULT_CONTINUE_WIRE},
        Continue(),
        id="continue-default",
    ),
    pytest.param(
        {"method": "continue", "params": FULL_CONTINUE_WIRE},
        Continue(FULL_CONTINUE_MODEL),
        id="continue-transactions-and-accounts",
    ),
    pytest.param(
        {"method": "continueTo", "params": {"slot": START + 7, "batchIndex": 4}},
        ContinueTo(slot=START + 7, batch_index=4),
        id="continueTo",
    ),
    pytest.param(
        {"method": "continueTo", "params": {"slot": START + 7, "batchIndex": None}},
        ContinueTo(slot=START + 7, batch_index=None),
        id="continueTo-slot-start",
    ),
    pytest.param(
        {"method": "closeBacktestSession"},
        CloseBacktestSession(),
        id="closeBacktestSession",
    ),
    pytest.param(
        {"method": "attachBacktestSession", "params": {"session_id": SESSION, "last_sequence": 41}},
        AttachBacktestSession(session_id=SESSION, last_sequence=41),
        id="attach",
    ),
    pytest.param(
        {
            "method": "attachBacktestSession",
            "params": {"session_id": SESSION, "last_sequence": None},
        },
        AttachBacktestSession(session_id=SESSION, last_sequence=None),
        id="attach-replay-everything",
    ),
    pytest.param(
        {"method": "resumeAttachedSession"},
        ResumeAttachedSession(),
        id="resumeAttachedSession",
    ),
    pytest.param(
        {
            "method": "continueSessionV1",
            "params": {"sessionId": SESSION, "params": FULL_CONTINUE_WIRE},
        },
        ContinueSessionV1(session_id=SESSION, params=FULL_CONTINUE_MODEL),
        id="continueSessionV1",
    ),
    pytest.param(
        {
            "method": "continueSessionV1",
            "params": {"sessionId": SESSION_B, "params": DEFAULT_CONTINUE_WIRE},
        },
        ContinueSessionV1(session_id=SESSION_B),
        id="continueSessionV1-default",
    ),
    pytest.param(
        {
            "method": "continueToSessionV1",
            "params": {"sessionId": SESSION, "params": {"slot": START + 3, "batchIndex": 0}},
        },
        ContinueToSessionV1(session_id=SESSION, slot=START + 3, batch_index=0),
        id="continueToSessionV1",
    ),
    pytest.param(
        {"method": "closeSessionV1", "params": {"sessionId": SESSION_B}},
        CloseSessionV1(session_id=SESSION_B),
        id="closeSessionV1",
    ),
    pytest.param(
        {
            "method": "attachParallelControlSessionV2",
            "params": {
                "control_session_id": CONTROL_SESSION,
                "last_sequences": {SESSION: 12, SESSION_B: 9},
            },
        },
        AttachParallelControlSessionV2(
            control_session_id=CONTROL_SESSION, last_sequences={SESSION: 12, SESSION_B: 9}
        ),
        id="attachParallelControlSessionV2",
    ),
]


@pytest.mark.parametrize(("wire", "model"), CLIENT_CASES)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "binary"])
def test_client_message_decodes(wire: Json, model: Any, as_bytes: bool) -> None:
    data: str | bytes = frame(wire).encode() if as_bytes else frame(wire)
    assert decode_control(data) == Sequenced(None, model)


@pytest.mark.parametrize(("wire", "model"), CLIENT_CASES)
def test_client_message_encodes_documented_json(wire: Json, model: Any) -> None:
    assert parsed(encode_control(model)) == wire


def test_every_client_method_has_a_golden_case() -> None:
    methods = {cast(Json, p.values[0])["method"] for p in CLIENT_CASES}
    assert methods == {
        "createBacktestSession",
        "continue",
        "continueTo",
        "closeBacktestSession",
        "attachBacktestSession",
        "resumeAttachedSession",
        "continueSessionV1",
        "continueToSessionV1",
        "closeSessionV1",
        "attachParallelControlSessionV2",
    }


def test_create_session_slot_count_means_end_is_start_plus_count() -> None:
    params = CreateSession(start_slot=START, slot_count=100)
    assert params.end_slot == START + 100
    assert params.slot_count == 101
    assert not params.resumable
    assert FULL_CREATE_MODEL.resumable


# ---------------------------------------------------------------- server -> client (§2.2, §4)

SUMMARY: Json = {
    "slotsExecuted": 100,
    "transactionsExecuted": 48_213,
    "transactionsSucceeded": 47_990,
    "transactionsFailed": 223,
    "accountDiffs": 130_554,
}

# (camelCase wire, snake_case wire, model)
EVENT_CASES: list[tuple[str, Json, Json, Any]] = [
    (
        "readyForContinue",
        {"method": "readyForContinue"},
        {"method": "readyForContinue"},
        ReadyForContinue(),
    ),
    (
        "slotNotification",
        {"method": "slotNotification", "params": START + 1},
        {"method": "slotNotification", "params": START + 1},
        Slot(START + 1),
    ),
    (
        "status",
        {"method": "status", "params": {"status": "executingBlockTransactions"}},
        {"method": "status", "params": {"status": "executingBlockTransactions"}},
        Status("executingBlockTransactions"),
    ),
    (
        "paused",
        {"method": "paused", "params": {"slot": START + 7, "batchIndex": 4}},
        {"method": "paused", "params": {"slot": START + 7, "batch_index": 4}},
        Paused(slot=START + 7, batch_index=4),
    ),
    (
        "paused-slot-start",
        {"method": "paused", "params": {"slot": START + 7, "batchIndex": None}},
        {"method": "paused", "params": {"slot": START + 7, "batch_index": None}},
        Paused(slot=START + 7, batch_index=None),
    ),
    (
        "discoveryBatch",
        {
            "method": "discoveryBatch",
            "params": {
                "slot": START + 42,
                "batchIndex": 2,
                "transactions": [
                    {"data": TX_1, "encoding": "base64"},
                    {"data": TX_2, "encoding": "base64"},
                ],
            },
        },
        {
            "method": "discoveryBatch",
            "params": {
                "slot": START + 42,
                "batch_index": 2,
                "transactions": [
                    {"data": TX_1, "encoding": "base64"},
                    {"data": TX_2, "encoding": "base64"},
                ],
            },
        },
        DiscoveryBatch(slot=START + 42, batch_index=2, transactions=(TX_1, TX_2)),
    ),
    (
        "discoveryBatch-matched",
        {
            "method": "discoveryBatch",
            "params": {
                "slot": START + 42,
                "batchIndex": 0,
                "matched": [JUPITER],
                "transactions": [{"data": TRANSFER_V0, "encoding": "base64"}],
            },
        },
        {
            "method": "discoveryBatch",
            "params": {
                "slot": START + 42,
                "batch_index": 0,
                "matched": [JUPITER],
                "transactions": [{"data": TRANSFER_V0, "encoding": "base64"}],
            },
        },
        DiscoveryBatch(
            slot=START + 42, batch_index=0, transactions=(TRANSFER_V0,), matched=(JUPITER,)
        ),
    ),
    (
        "completed-summary",
        {"method": "completed", "params": {"summary": SUMMARY, "agentStats": None}},
        {"method": "completed", "params": {"summary": SUMMARY, "agent_stats": None}},
        Completed(summary=SUMMARY),
    ),
    (
        "completed-no-summary",
        {"method": "completed", "params": {"summary": None, "agentStats": None}},
        {"method": "completed", "params": {"summary": None, "agent_stats": None}},
        Completed(),
    ),
    ("success", {"method": "success"}, {"method": "success"}, Success()),
    (
        "error",
        {"method": "error", "params": {"InvalidRequest": {"error": "session is not ready"}}},
        {"method": "error", "params": {"InvalidRequest": {"error": "session is not ready"}}},
        ServerError(InvalidRequest("session is not ready")),
    ),
]

# Every BacktestError variant of §4: (wire params, model).
ERROR_CASES: list[tuple[Any, Any]] = [
    (
        {"InvalidTransactionEncoding": {"index": 1, "error": "invalid base64 at offset 12"}},
        InvalidTransactionEncoding(index=1, error="invalid base64 at offset 12"),
    ),
    (
        {"InvalidTransactionFormat": {"index": 0, "error": "too many account keys"}},
        InvalidTransactionFormat(index=0, error="too many account keys"),
    ),
    (
        {
            "InvalidAccountEncoding": {
                "address": TOKEN_ACCOUNT,
                "encoding": "base58",
                "error": "unsupported encoding",
            }
        },
        InvalidAccountEncoding(
            address=TOKEN_ACCOUNT, encoding="base58", error="unsupported encoding"
        ),
    ),
    (
        {"InvalidAccountOwner": {"address": TOKEN_ACCOUNT, "error": "owner is not base58"}},
        InvalidAccountOwner(address=TOKEN_ACCOUNT, error="owner is not base58"),
    ),
    (
        {"InvalidAccountPubkey": {"address": "not-a-key", "error": "invalid length"}},
        InvalidAccountPubkey(address="not-a-key", error="invalid length"),
    ),
    ("NoMoreBlocks", NoMoreBlocks()),
    (
        {"AdvanceSlotFailed": {"slot": START + 5, "error": "bank frozen"}},
        AdvanceSlotFailed(slot=START + 5, error="bank frozen"),
    ),
    (
        {"InvalidRequest": {"error": "session is not ready"}},
        InvalidRequest(error="session is not ready"),
    ),
    ({"Internal": {"error": "worker crashed"}}, Internal(error="worker crashed")),
    (
        {"InvalidBlockhashFormat": {"slot": START + 9, "error": "wrong length"}},
        InvalidBlockhashFormat(slot=START + 9, error="wrong length"),
    ),
    (
        {"InitializingSysvarsFailed": {"slot": START, "error": "missing clock"}},
        InitializingSysvarsFailed(slot=START, error="missing clock"),
    ),
    (
        {"ClerkError": {"error": "bundle fetch timed out"}},
        ClerkError(error="bundle fetch timed out"),
    ),
    (
        {"SimulationError": {"error": "program failed to complete"}},
        SimulationError(error="program failed to complete"),
    ),
    ({"SessionNotFound": {"session_id": SESSION}}, SessionNotFound(session_id=SESSION)),
    ("SessionOwnerMismatch", SessionOwnerMismatch()),
]


def _error_name(wire: Any) -> str:
    return wire if isinstance(wire, str) else next(iter(wire))


SERVER_CASES = [
    pytest.param(
        {
            "method": "sessionCreated",
            "params": {"sessionId": SESSION, "rpcEndpoint": f"/backtest/{SESSION}"},
        },
        {
            "method": "sessionCreated",
            "params": {"session_id": SESSION, "rpc_endpoint": f"/backtest/{SESSION}"},
        },
        SessionCreated(session_id=SESSION, rpc_endpoint=f"/backtest/{SESSION}"),
        id="sessionCreated",
    ),
    pytest.param(
        {
            "method": "sessionCreated",
            "params": {
                "sessionId": SESSION,
                "rpcEndpoint": f"wss://rpc.example.org/backtest/{SESSION}",
            },
        },
        {
            "method": "sessionCreated",
            "params": {
                "session_id": SESSION,
                "rpc_endpoint": f"wss://rpc.example.org/backtest/{SESSION}",
            },
        },
        SessionCreated(
            session_id=SESSION, rpc_endpoint=f"wss://rpc.example.org/backtest/{SESSION}"
        ),
        id="sessionCreated-absolute-url",
    ),
    pytest.param(
        {
            "method": "sessionAttached",
            "params": {"sessionId": SESSION, "rpcEndpoint": f"/backtest/{SESSION}"},
        },
        {
            "method": "sessionAttached",
            "params": {"session_id": SESSION, "rpc_endpoint": f"/backtest/{SESSION}"},
        },
        SessionAttached(session_id=SESSION, rpc_endpoint=f"/backtest/{SESSION}"),
        id="sessionAttached",
    ),
    pytest.param(
        {
            "method": "sessionsCreatedV2",
            "params": {
                "controlSessionId": CONTROL_SESSION,
                "sessionIds": [SESSION, SESSION_B],
                "startSlots": [START, START + 50],
                "endSlots": [START + 49, END],
            },
        },
        {
            "method": "sessionsCreatedV2",
            "params": {
                "control_session_id": CONTROL_SESSION,
                "session_ids": [SESSION, SESSION_B],
                "start_slots": [START, START + 50],
                "end_slots": [START + 49, END],
            },
        },
        SessionsCreatedV2(
            control_session_id=CONTROL_SESSION,
            session_ids=(SESSION, SESSION_B),
            start_slots=(START, START + 50),
            end_slots=(START + 49, END),
        ),
        id="sessionsCreatedV2",
    ),
    pytest.param(
        {
            "method": "parallelSessionAttachedV2",
            "params": {"controlSessionId": CONTROL_SESSION, "sessionIds": [SESSION, SESSION_B]},
        },
        {
            "method": "parallelSessionAttachedV2",
            "params": {"control_session_id": CONTROL_SESSION, "session_ids": [SESSION, SESSION_B]},
        },
        ParallelSessionAttachedV2(
            control_session_id=CONTROL_SESSION, session_ids=(SESSION, SESSION_B)
        ),
        id="parallelSessionAttachedV2",
    ),
    *(pytest.param(camel, snake, model, id=name) for name, camel, snake, model in EVENT_CASES),
    *(
        pytest.param(
            {"method": "status", "params": {"status": status}},
            {"method": "status", "params": {"status": status}},
            Status(status),
            id=f"status-{status}",
        )
        for status in sorted(KNOWN_STATUSES)
    ),
    *(
        pytest.param(
            {"method": "error", "params": wire},
            {"method": "error", "params": wire},
            ServerError(model),
            id=f"error-{_error_name(wire)}",
        )
        for wire, model in ERROR_CASES
    ),
    *(
        pytest.param(
            {
                "method": "sessionEventV2",
                "params": {"sessionId": SESSION_B, "seqId": 17, "event": camel},
            },
            {
                "method": "sessionEventV2",
                "params": {"session_id": SESSION_B, "seq_id": 17, "event": snake},
            },
            SessionEventV2(session_id=SESSION_B, seq_id=17, event=model),
            id=f"sessionEventV2-{name}",
        )
        for name, camel, snake, model in EVENT_CASES
    ),
]


@pytest.mark.parametrize(("camel", "snake", "model"), SERVER_CASES)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "binary"])
def test_server_message_decodes_both_spellings(
    camel: Json, snake: Json, model: Any, as_bytes: bool
) -> None:
    for wire in (camel, snake):
        data: str | bytes = frame(wire).encode() if as_bytes else frame(wire)
        assert decode_control(data) == Sequenced(None, model)


@pytest.mark.parametrize(("camel", "snake", "model"), SERVER_CASES)
def test_server_message_encodes_both_spellings(camel: Json, snake: Json, model: Any) -> None:
    assert parsed(encode_control(model)) == camel
    snake_text = encode_control(model, snake_case=True)
    assert parsed(snake_text) == snake
    assert decode_control(snake_text) == Sequenced(None, model)


@pytest.mark.parametrize(("camel", "snake", "model"), SERVER_CASES)
def test_server_message_carries_its_sequence_number(camel: Json, snake: Json, model: Any) -> None:
    assert decode_control(frame({**camel, "seqId": 7})) == Sequenced(7, model)
    assert decode_control(frame({**snake, "seq_id": 8})) == Sequenced(8, model)
    assert parsed(encode_control(Sequenced(7, model))) == {**camel, "seqId": 7}
    assert parsed(encode_control(Sequenced(8, model), snake_case=True)) == {**snake, "seq_id": 8}


def test_every_server_method_and_error_variant_has_a_golden_case() -> None:
    methods = {cast(Json, p.values[0])["method"] for p in SERVER_CASES}
    assert methods == {
        "sessionCreated",
        "sessionAttached",
        "sessionsCreatedV2",
        "parallelSessionAttachedV2",
        "readyForContinue",
        "slotNotification",
        "status",
        "paused",
        "discoveryBatch",
        "completed",
        "success",
        "error",
        "sessionEventV2",
    }
    assert {_error_name(wire) for wire, _ in ERROR_CASES} == set(ERROR_VARIANTS)
    assert len(ERROR_VARIANTS) == 15


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (InvalidRequest("session is not ready"), "InvalidRequest: session is not ready"),
        (SessionNotFound(SESSION), "SessionNotFound"),
        (NoMoreBlocks(), "NoMoreBlocks"),
        (UnknownBacktestError("RateLimited", {"reason": "slow down"}), "RateLimited: slow down"),
        (UnknownBacktestError("QuotaExceeded"), "QuotaExceeded"),
    ],
)
def test_error_message_comes_from_error_or_reason(error: Any, text: str) -> None:
    assert ServerError(error).message == text


# ---------------------------------------------------------------- tolerance (control)


@pytest.mark.parametrize(
    ("method", "model"),
    [
        ("readyForContinue", ReadyForContinue()),
        ("success", Success()),
        ("closeBacktestSession", CloseBacktestSession()),
        ("resumeAttachedSession", ResumeAttachedSession()),
        ("completed", Completed()),
        ("continue", Continue()),
    ],
)
def test_missing_and_null_params_decode_alike(method: str, model: Any) -> None:
    assert decode_control(frame({"method": method})).message == model
    assert decode_control(frame({"method": method, "params": None})).message == model


def test_unknown_control_method_keeps_the_raw_json_and_reemits_it() -> None:
    raw = {"method": "sessionMigratedV3", "params": {"region": "eu-2", "at": [1, 2]}, "hint": True}
    decoded = decode_control(frame(raw))
    assert decoded == Sequenced(None, UnknownMessage("sessionMigratedV3", raw))
    assert parsed(encode_control(decoded.message)) == raw


def test_unknown_control_method_keeps_its_sequence_number() -> None:
    raw = {"method": "heartbeatV9", "seqId": 33}
    decoded = decode_control(frame(raw))
    assert decoded == Sequenced(33, UnknownMessage("heartbeatV9", raw))
    assert parsed(encode_control(decoded)) == raw


def test_unknown_status_is_kept_as_received() -> None:
    decoded = decode_control(frame({"method": "status", "params": {"status": "warmingCaches"}}))
    assert decoded.message == Status("warmingCaches")
    assert isinstance(decoded.message, Status)
    assert not decoded.message.known
    assert Status("bundleReady").known
    assert parsed(encode_control(decoded.message)) == {
        "method": "status",
        "params": {"status": "warmingCaches"},
    }


@pytest.mark.parametrize(
    "wire",
    [
        {
            "method": "sessionCreated",
            "params": {"sessionId": SESSION, "rpcEndpoint": "/backtest/x", "region": "eu-2"},
        },
        {"method": "status", "params": {"status": "bundleReady", "progress": 0.5}},
        {"method": "paused", "params": {"slot": START, "batchIndex": 1, "reason": "target"}},
        {
            "method": "discoveryBatch",
            "params": {"slot": START, "batchIndex": 0, "transactions": [], "matched": [JUPITER]},
        },
        {"method": "completed", "params": {"summary": None, "agentStats": None, "ms": 91}},
        {
            "method": "sessionsCreatedV2",
            "params": {
                "controlSessionId": CONTROL_SESSION,
                "sessionIds": [],
                "startSlots": [],
                "endSlots": [],
                "bundleSize": 25,
            },
        },
        {
            "method": "sessionEventV2",
            "params": {
                "sessionId": SESSION,
                "seqId": 2,
                "event": {"method": "readyForContinue"},
                "shard": 3,
            },
        },
        {
            "method": "createBacktestSession",
            "params": {"startSlot": START, "endSlot": END, "simulateJito": True},
        },
        {
            "method": "continue",
            "params": {**DEFAULT_CONTINUE_WIRE, "skipSignatureCheck": True},
        },
        {"method": "continueTo", "params": {"slot": START, "batchIndex": 3, "inclusive": False}},
        {
            "method": "attachBacktestSession",
            "params": {"session_id": SESSION, "last_sequence": 3, "client": "trio"},
        },
        {"method": "closeSessionV1", "params": {"sessionId": SESSION, "why": "done"}},
    ],
    ids=lambda wire: wire["method"],
)
def test_extra_keys_are_kept_and_reemitted(wire: Json) -> None:
    decoded = decode_control(frame(wire)).message
    assert parsed(encode_control(decoded)) == wire


def test_extra_keys_land_in_extra() -> None:
    decoded = decode_control(
        frame(
            {
                "method": "createBacktestSession",
                "params": {
                    "startSlot": START,
                    "endSlot": END,
                    "discoveries": [{"programExecuted": JUPITER, "minCount": 2}],
                    "simulateJito": True,
                },
            }
        )
    ).message
    assert isinstance(decoded, CreateBacktestSession)
    assert decoded.params.extra == {"simulateJito": True}
    assert decoded.params.discoveries == (Discovery(JUPITER, extra={"minCount": 2}),)


def test_client_messages_also_decode_from_the_other_spelling() -> None:
    create = {
        "method": "createBacktestSession",
        "params": {
            "start_slot": START,
            "end_slot": END,
            "signer_filter": [WALLET],
            "disconnect_timeout_secs": 60,
            "discoveries": [{"program_executed": JUPITER}],
        },
    }
    assert decode_control(frame(create)).message == CreateBacktestSession(
        CreateSession(
            start_slot=START,
            end_slot=END,
            signer_filter=[WALLET],
            disconnect_timeout_secs=60,
            discoveries=[JUPITER],
        )
    )
    cont = {
        "method": "continue",
        "params": {"advance_count": 2, "modify_account_states": {WALLET: FUNDED_WALLET_WIRE}},
    }
    assert decode_control(frame(cont)).message == Continue(
        ContinueParams(advance_count=2, modify_account_states={WALLET: FUNDED_WALLET_MODEL})
    )
    attach = {
        "method": "attachBacktestSession",
        "params": {"sessionId": SESSION, "lastSequence": 5},
    }
    assert decode_control(frame(attach)).message == AttachBacktestSession(SESSION, 5)
    parallel = {
        "method": "attachParallelControlSessionV2",
        "params": {"controlSessionId": CONTROL_SESSION, "lastSequences": {SESSION: 1}},
    }
    assert decode_control(frame(parallel)).message == AttachParallelControlSessionV2(
        CONTROL_SESSION, {SESSION: 1}
    )


def test_account_data_also_decodes_from_the_ui_account_spelling() -> None:
    account = {**FUNDED_WALLET_WIRE, "data": ["", "base64"]}
    decoded = decode_control(
        frame({"method": "continue", "params": {"modifyAccountStates": {WALLET: account}}})
    ).message
    assert decoded == Continue(ContinueParams(modify_account_states={WALLET: FUNDED_WALLET_MODEL}))


def test_discovery_batch_accepts_bare_base64_strings() -> None:
    """Earlier servers sent each transaction as a bare base64 string (protocol.md §2.2)."""
    wire = {
        "method": "discoveryBatch",
        "params": {"slot": START, "batchIndex": 3, "transactions": [TRANSFER_V0, TX_2]},
    }
    decoded = decode_control(frame(wire)).message
    assert decoded == DiscoveryBatch(slot=START, batch_index=3, transactions=(TRANSFER_V0, TX_2))


def test_discovery_batch_accepts_base58_encoded_binary() -> None:
    # "StV1DL6CwTryKyV" is base58 for b"hello world".
    wire = {
        "method": "discoveryBatch",
        "params": {
            "slot": START,
            "batchIndex": 0,
            "transactions": [{"data": "StV1DL6CwTryKyV", "encoding": "base58"}],
        },
    }
    decoded = decode_control(frame(wire)).message
    assert isinstance(decoded, DiscoveryBatch)
    assert decoded.transactions == ("aGVsbG8gd29ybGQ=",)


def test_discovery_batch_decodes_its_transactions_with_solders() -> None:
    from solders.pubkey import Pubkey
    from solders.signature import Signature

    wire = {
        "method": "discoveryBatch",
        "params": {
            "slot": START,
            "batchIndex": 0,
            "matched": [SYSTEM_PROGRAM],
            "transactions": [{"data": TRANSFER_V0, "encoding": "base64"}, TRANSFER_V0],
        },
    }
    decoded = decode_control(frame(wire)).message
    assert isinstance(decoded, DiscoveryBatch)
    assert decoded.matched == (SYSTEM_PROGRAM,)
    first, second = decoded.decode_transactions()
    assert first == second
    assert first.signatures == [Signature.from_string(SIGNATURE)]
    keys = first.message.account_keys
    assert keys[:2] == [Pubkey.from_string(WALLET), Pubkey.from_string(TOKEN_ACCOUNT)]
    assert str(keys[2]) == SYSTEM_PROGRAM


def test_discovery_batch_with_a_transaction_that_is_not_one() -> None:
    batch = DiscoveryBatch(slot=START, batch_index=0, transactions=(TRANSFER_V0, "AAAA"))
    with pytest.raises(ProtocolError, match="transaction 1 is not a serialized"):
        batch.decode_transactions()


def test_sessions_created_v2_without_slot_lists() -> None:
    """Older servers (before reference 0.13) send no slot lists; that is not an error."""
    wire = {
        "method": "sessionsCreatedV2",
        "params": {"controlSessionId": CONTROL_SESSION, "sessionIds": [SESSION, SESSION_B]},
    }
    decoded = decode_control(frame(wire)).message
    assert decoded == SessionsCreatedV2(
        control_session_id=CONTROL_SESSION, session_ids=(SESSION, SESSION_B)
    )
    assert isinstance(decoded, SessionsCreatedV2)
    assert decoded.start_slots is None
    assert decoded.end_slots is None
    assert parsed(encode_control(decoded)) == wire


def test_continue_to_without_a_batch_index_pauses_at_the_slot_start() -> None:
    for params in ({"slot": START}, {"slot": START, "batchIndex": None}):
        decoded = decode_control(frame({"method": "continueTo", "params": params})).message
        assert decoded == ContinueTo(slot=START, batch_index=None)
    wrapped = ContinueToSessionV1(session_id=SESSION, slot=START)
    assert parsed(encode_control(wrapped)) == {
        "method": "continueToSessionV1",
        "params": {"sessionId": SESSION, "params": {"slot": START, "batchIndex": None}},
    }


def test_slot_notification_from_an_object_breaks_the_protocol() -> None:
    # protocol.md §2.2, §7: the slot is a bare integer; the old tolerance of an object
    # delivered a hostile server's {"slot": ...} as a Slot.
    with pytest.raises(ProtocolError, match="params must be a slot") as info:
        decode_control(frame({"method": "slotNotification", "params": {"slot": START}}))
    assert info.value.method == "slotNotification"


@pytest.mark.parametrize(
    ("params", "model", "canonical"),
    [
        (
            {"invalidRequest": {"error": "bad"}},
            InvalidRequest("bad"),
            {"InvalidRequest": {"error": "bad"}},
        ),
        ("noMoreBlocks", NoMoreBlocks(), "NoMoreBlocks"),
        ("sessionOwnerMismatch", SessionOwnerMismatch(), "SessionOwnerMismatch"),
        (
            {"sessionNotFound": {"sessionId": SESSION}},
            SessionNotFound(SESSION),
            {"SessionNotFound": {"session_id": SESSION}},
        ),
        (
            {"code": "InvalidRequest", "error": "bad"},
            InvalidRequest("bad"),
            {"InvalidRequest": {"error": "bad"}},
        ),
        (
            {"code": "advanceSlotFailed", "slot": 9, "error": "x"},
            AdvanceSlotFailed(9, "x"),
            {"AdvanceSlotFailed": {"slot": 9, "error": "x"}},
        ),
        ({"code": "SessionOwnerMismatch"}, SessionOwnerMismatch(), "SessionOwnerMismatch"),
        (
            {"code": "SessionNotFound", "session_id": SESSION},
            SessionNotFound(SESSION),
            {"SessionNotFound": {"session_id": SESSION}},
        ),
        ({"NoMoreBlocks": None}, NoMoreBlocks(), "NoMoreBlocks"),
        ({"NoMoreBlocks": {}}, NoMoreBlocks(), "NoMoreBlocks"),
    ],
    ids=repr,
)
def test_error_variant_spellings_are_accepted_and_reemitted_canonically(
    params: Any, model: Any, canonical: Any
) -> None:
    decoded = decode_control(frame({"method": "error", "params": params})).message
    assert decoded == ServerError(model)
    assert parsed(encode_control(decoded)) == {"method": "error", "params": canonical}


@pytest.mark.parametrize(
    ("params", "model"),
    [
        ("QuotaExceeded", UnknownBacktestError("QuotaExceeded")),
        (
            {"RateLimited": {"reason": "too many sessions", "retryAfterSecs": 5}},
            UnknownBacktestError(
                "RateLimited", {"reason": "too many sessions", "retryAfterSecs": 5}
            ),
        ),
        ({"Maintenance": {}}, UnknownBacktestError("Maintenance", {})),
    ],
    ids=repr,
)
def test_unknown_error_variants_are_kept(params: Any, model: UnknownBacktestError) -> None:
    wire = {"method": "error", "params": params}
    decoded = decode_control(frame(wire)).message
    assert decoded == ServerError(model)
    assert parsed(encode_control(decoded)) == wire


def test_unknown_error_variant_in_code_form_is_kept_with_its_fields() -> None:
    decoded = decode_control(
        frame({"method": "error", "params": {"code": "Throttled", "error": "later"}})
    ).message
    assert decoded == ServerError(UnknownBacktestError("Throttled", {"error": "later"}))
    assert isinstance(decoded, ServerError)
    assert decoded.message == "Throttled: later"


def test_session_event_with_an_unknown_or_non_event_method_is_kept_raw() -> None:
    events: list[Json] = [
        {"method": "progressV3", "params": {"pct": 40}},
        {"method": "sessionCreated", "params": {"sessionId": SESSION, "rpcEndpoint": "/x"}},
    ]
    for event in events:
        wire = {
            "method": "sessionEventV2",
            "params": {"sessionId": SESSION, "seqId": 4, "event": event},
        }
        decoded = decode_control(frame(wire)).message
        assert decoded == SessionEventV2(SESSION, 4, UnknownMessage(event["method"], event))
        assert parsed(encode_control(decoded)) == wire


def test_seq_id_spellings_and_absence() -> None:
    ready = {"method": "readyForContinue"}
    assert decode_control(frame(ready)).seq_id is None
    assert decode_control(frame({**ready, "seqId": 1})).seq_id == 1
    assert decode_control(frame({**ready, "seq_id": 2})).seq_id == 2
    assert decode_control(frame({**ready, "seqId": None})).seq_id is None
    assert "seqId" not in parsed(encode_control(Sequenced(None, ReadyForContinue())))


def test_binary_frame_with_non_ascii_text() -> None:
    wire = {"method": "status", "params": {"status": "préparation ✓"}}
    assert decode_control(frame(wire).encode("utf-8")).message == Status("préparation ✓")


# ---------------------------------------------------------------- bad input (control)


@pytest.mark.parametrize(
    ("data", "method", "fragments"),
    [
        ("not json{", None, ["control message", "not valid JSON"]),
        (b"\xff\xfe{}", None, ["control message", "not valid JSON"]),
        ("", None, ["control message", "not valid JSON"]),
        ("[1, 2]", None, ["control message", "expected a JSON object, got list"]),
        ('{"params": {}}', None, ["control message", "'method'", "got null"]),
        ('{"method": 5}', None, ["control message", "'method'", "got int"]),
        ('{"method": "readyForContinue", "seqId": "7"}', None, ["'seqId'", "got str"]),
        ('{"method": "readyForContinue", "seq_id": 1.5}', None, ["'seqId'", "got float"]),
    ],
)
def test_malformed_control_frames(
    data: str | bytes, method: str | None, fragments: list[str]
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_control(data)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert info.value.method == method
    assert isinstance(info.value, ValueError)


BAD_CONTROL = [
    pytest.param(
        "createBacktestSession", {"endSlot": END}, ["missing key 'startSlot'"], id="create-no-start"
    ),
    pytest.param("createBacktestSession", None, ["missing key 'startSlot'"], id="create-null"),
    pytest.param(
        "createBacktestSession", [START, END], ["expected an object, got list"], id="create-list"
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": "1", "endSlot": END},
        ["key 'startSlot'", "expected an integer, got str"],
        id="create-start-str",
    ),
    pytest.param(
        "createBacktestSession",
        {"start_slot": START, "end_slot": 2.5},
        ["key 'end_slot'", "expected an integer, got float"],
        id="create-end-float-snake",
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": START, "endSlot": END, "sendSummary": 1},
        ["key 'sendSummary'", "expected a boolean, got int"],
        id="create-summary-int",
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": START, "endSlot": END, "parallel": "yes"},
        ["key 'parallel'", "boolean"],
        id="create-parallel-str",
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": START, "endSlot": END, "discoveries": [JUPITER]},
        ["key 'discoveries'", "expected an object, got str"],
        id="create-discovery-str",
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": START, "endSlot": END, "discoveries": [{}]},
        ["key 'discoveries'", "missing key 'programExecuted'"],
        id="create-discovery-empty",
    ),
    pytest.param(
        "createBacktestSession",
        {"startSlot": START, "endSlot": END, "signerFilter": WALLET},
        ["key 'signerFilter'", "expected a list, got str"],
        id="create-signers-str",
    ),
    pytest.param("continue", {"advanceCount": 0}, ["'advanceCount'", ">= 1"], id="continue-zero"),
    pytest.param(
        "continue",
        {"advanceCount": True},
        ["key 'advanceCount'", "expected an integer, got bool"],
        id="continue-bool",
    ),
    pytest.param(
        "continue",
        {"transactions": TX_1},
        ["key 'transactions'", "expected a list, got str"],
        id="continue-transactions-str",
    ),
    pytest.param(
        "continue",
        {"modifyAccountStates": [ACCOUNT_WIRE]},
        ["key 'modifyAccountStates'", "expected an object, got list"],
        id="continue-accounts-list",
    ),
    pytest.param(
        "continue",
        {"modifyAccountStates": {WALLET: {**FUNDED_WALLET_WIRE, "lamports": None}}},
        ["key 'modifyAccountStates'", "key 'lamports'", "got null"],
        id="continue-account-lamports-null",
    ),
    pytest.param(
        "continue",
        {"modifyAccountStates": {WALLET: {k: v for k, v in ACCOUNT_WIRE.items() if k != "owner"}}},
        ["key 'modifyAccountStates'", "missing key 'owner'"],
        id="continue-account-no-owner",
    ),
    pytest.param(
        "continue",
        {"modifyAccountStates": {WALLET: {**ACCOUNT_WIRE, "data": "AAAA"}}},
        ["key 'modifyAccountStates'", "key 'data'"],
        id="continue-account-flat-data",
    ),
    pytest.param(
        "continueTo",
        {"slot": START, "batchIndex": "3"},
        ["key 'batchIndex'", "expected an integer, got str"],
        id="continueTo-batch-str",
    ),
    pytest.param(
        "attachBacktestSession",
        {"session_id": SESSION},
        ["missing key 'last_sequence'"],
        id="attach-no-cursor",
    ),
    pytest.param(
        "attachBacktestSession",
        {"session_id": SESSION, "last_sequence": "5"},
        ["key 'last_sequence'", "expected an integer, got str"],
        id="attach-cursor-str",
    ),
    pytest.param(
        "attachBacktestSession",
        {"last_sequence": 1},
        ["missing key 'session_id'"],
        id="attach-no-id",
    ),
    pytest.param(
        "continueSessionV1",
        {"params": DEFAULT_CONTINUE_WIRE},
        ["missing key 'sessionId'"],
        id="continueSessionV1-no-id",
    ),
    pytest.param(
        "continueSessionV1",
        {"sessionId": SESSION, "params": {"advanceCount": "2"}},
        ["key 'params'", "key 'advanceCount'", "expected an integer, got str"],
        id="continueSessionV1-count-str",
    ),
    pytest.param(
        "continueToSessionV1",
        {"sessionId": SESSION, "params": {"batchIndex": 0}},
        ["continueToSessionV1.params", "missing key 'slot'"],
        id="continueToSessionV1-no-slot",
    ),
    pytest.param(
        "continueToSessionV1",
        {"params": {"slot": 1, "batchIndex": 0}},
        ["missing key 'sessionId'"],
        id="continueToSessionV1-no-id",
    ),
    pytest.param(
        "closeSessionV1",
        {"sessionId": 5},
        ["key 'sessionId'", "expected a string, got int"],
        id="closeSessionV1-id-int",
    ),
    pytest.param(
        "attachParallelControlSessionV2",
        {"control_session_id": CONTROL_SESSION, "last_sequences": [[SESSION, 1]]},
        ["key 'last_sequences'", "expected an object, got list"],
        id="attachParallel-cursors-list",
    ),
    pytest.param(
        "attachParallelControlSessionV2",
        {"last_sequences": {}},
        ["missing key 'control_session_id'"],
        id="attachParallel-no-id",
    ),
    pytest.param(
        "sessionCreated",
        {"sessionId": SESSION},
        ["missing key 'rpcEndpoint'"],
        id="created-no-endpoint",
    ),
    pytest.param("sessionAttached", None, ["missing key 'sessionId'"], id="attached-null"),
    pytest.param(
        "sessionsCreatedV2",
        {"controlSessionId": "c", "sessionIds": ["a"], "startSlots": ["1"], "endSlots": [2]},
        ["key 'startSlots'", "expected an integer, got str"],
        id="createdV2-slot-str",
    ),
    pytest.param(
        "parallelSessionAttachedV2",
        {"controlSessionId": "c", "sessionIds": "a"},
        ["key 'sessionIds'", "expected a list, got str"],
        id="attachedV2-ids-str",
    ),
    pytest.param("slotNotification", "5", ["params must be a slot", "got str"], id="slot-str"),
    pytest.param("slotNotification", True, ["params must be a slot", "got bool"], id="slot-bool"),
    pytest.param("slotNotification", None, ["params must be a slot", "got null"], id="slot-null"),
    pytest.param("status", None, ["missing key 'status'"], id="status-null"),
    pytest.param(
        "status", {"status": 3}, ["key 'status'", "expected a string, got int"], id="status-int"
    ),
    pytest.param(
        "paused",
        {"slot": START, "batchIndex": 1.5},
        ["key 'batchIndex'", "expected an integer, got float"],
        id="paused-batch-float",
    ),
    pytest.param(
        "discoveryBatch",
        {"slot": START, "batchIndex": 0, "transactions": [7]},
        ["key 'transactions'", "transaction 0", "got int"],
        id="discovery-tx-int",
    ),
    pytest.param(
        "discoveryBatch",
        {"slot": START, "batchIndex": 0, "transactions": [{"data": TX_1, "encoding": "hex"}]},
        ["key 'transactions'", "unsupported encoding 'hex'"],
        id="discovery-tx-hex",
    ),
    pytest.param(
        "discoveryBatch",
        {"slot": START, "batchIndex": 0, "transactions": [{"encoding": "base64"}]},
        ["key 'transactions'", "'data' and 'encoding' must be strings"],
        id="discovery-tx-no-data",
    ),
    pytest.param(
        "discoveryBatch",
        {"slot": START, "batchIndex": 0, "transactions": None},
        ["key 'transactions'", "expected a list, got null"],
        id="discovery-null-txs",
    ),
    pytest.param(
        "completed",
        {"summary": [1, 2], "agentStats": None},
        ["key 'summary'", "expected an object, got list"],
        id="completed-summary-list",
    ),
    pytest.param("error", None, ["expected a variant name or a one-key object"], id="error-null"),
    pytest.param("error", [1], ["expected a variant name or a one-key object"], id="error-list"),
    pytest.param(
        "error",
        {"Internal": {"error": "a"}, "Extra": {}},
        ["expected a variant name or a one-key object"],
        id="error-two-keys",
    ),
    pytest.param(
        "error",
        {"InvalidRequest": {}},
        ["error.InvalidRequest", "missing key 'error'"],
        id="error-no-text",
    ),
    pytest.param(
        "error",
        {"InvalidTransactionEncoding": {"index": "0", "error": "x"}},
        ["error.InvalidTransactionEncoding", "key 'index'", "expected an integer, got str"],
        id="error-index-str",
    ),
    pytest.param(
        "error",
        {"SessionNotFound": {}},
        ["error.SessionNotFound", "missing key 'session_id'"],
        id="error-no-session",
    ),
    pytest.param(
        "error",
        {"InvalidRequest": "session is not ready"},
        ["error.InvalidRequest", "expected an object, got str"],
        id="error-fields-str",
    ),
    pytest.param(
        "sessionEventV2",
        {"sessionId": SESSION, "event": {"method": "success"}},
        ["key 'seqId'", "got null"],
        id="eventV2-no-seq",
    ),
    pytest.param(
        "sessionEventV2",
        {"seqId": 1, "event": {"method": "success"}},
        ["key 'sessionId'", "got null"],
        id="eventV2-no-session",
    ),
    pytest.param(
        "sessionEventV2",
        {"sessionId": SESSION, "seqId": 1, "event": "success"},
        ["key 'event'", "got str"],
        id="eventV2-event-str",
    ),
    pytest.param(
        "sessionEventV2",
        {"sessionId": SESSION, "seqId": 1, "event": {"method": "paused", "params": {"x": 1}}},
        ["sessionEventV2.event", "paused", "missing key 'slot'"],
        id="eventV2-bad-event",
    ),
    pytest.param(
        "sessionEventV2",
        {"sessionId": SESSION, "seqId": 1, "event": {"params": {}}},
        ["sessionEventV2.event", "key 'method'"],
        id="eventV2-event-no-method",
    ),
]


@pytest.mark.parametrize(("method", "params", "fragments"), BAD_CONTROL)
def test_bad_control_message_names_method_and_key(
    method: str, params: Any, fragments: list[str]
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_control(frame({"method": method, "params": params}))
    text = str(info.value)
    assert text.startswith(method), text
    for fragment in fragments:
        assert fragment in text
    assert info.value.method == method


# ---------------------------------------------------------------- data plane (§5)

UI_ACCOUNT_PRE: Json = {
    "lamports": 2_039_280,
    "data": ["AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADoAwAAAAAAAA==", "base64"],
    "owner": TOKEN_PROGRAM,
    "executable": False,
    "rentEpoch": 18_446_744_073_709_551_615,
    "space": 165,
}
UI_ACCOUNT_POST: Json = {
    **UI_ACCOUNT_PRE,
    "data": ["AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAADQBwAAAAAAAA==", "base64"],
}
ACCOUNT_DIFF: Json = {
    "context": {"slot": START + 12, "txIndex": 3},
    "account": TOKEN_ACCOUNT,
    "signature": SIGNATURE,
    "pre": UI_ACCOUNT_PRE,
    "post": UI_ACCOUNT_POST,
}
TRANSACTION: Json = {
    "slot": START + 12,
    "blockTime": 1_731_000_123,
    "version": 0,
    "transaction": {
        "signatures": [SIGNATURE],
        "message": {
            "header": {
                "numRequiredSignatures": 1,
                "numReadonlySignedAccounts": 0,
                "numReadonlyUnsignedAccounts": 3,
            },
            "accountKeys": [WALLET, TOKEN_ACCOUNT, SYSTEM_PROGRAM, TOKEN_PROGRAM, JUPITER],
            "recentBlockhash": "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N",
            "instructions": [
                {"programIdIndex": 4, "accounts": [0, 1, 3], "data": "3Bxs4h24hBtQy9rw"},
            ],
            "addressTableLookups": [],
        },
    },
    "meta": {
        "err": None,
        "status": {"Ok": None},
        "fee": 5000,
        "preBalances": [1_000_000_000, 2_039_280, 1, 934_087_680, 1_141_440],
        "postBalances": [999_995_000, 2_039_280, 1, 934_087_680, 1_141_440],
        "innerInstructions": [],
        "logMessages": [
            f"Program {JUPITER} invoke [1]",
            "Program log: Instruction: Route",
            f"Program {JUPITER} consumed 41234 of 200000 compute units",
            f"Program {JUPITER} success",
        ],
        "preTokenBalances": [],
        "postTokenBalances": [],
        "rewards": [],
        "computeUnitsConsumed": 41_234,
    },
}

RPC_CASES = [
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "transactionSubscribe",
            "params": [JUPITER, {"replayFromSlot": START + 10, "compression": "zstd"}],
        },
        TransactionSubscribe(
            id=1, program_id=JUPITER, replay_from_slot=START + 10, compression="zstd"
        ),
        id="transactionSubscribe-replay-zstd",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 2, "method": "transactionSubscribe", "params": [JUPITER, {}]},
        TransactionSubscribe(id=2, program_id=JUPITER),
        id="transactionSubscribe-plain",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "accountDiffSubscribe",
            "params": [
                TOKEN_PROGRAM,
                {"address_type": "program", "replayFromSlot": START, "compression": "zstd"},
            ],
        },
        AccountDiffSubscribe(
            id=3,
            address=TOKEN_PROGRAM,
            address_type="program",
            replay_from_slot=START,
            compression="zstd",
        ),
        id="accountDiffSubscribe-program",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "accountDiffSubscribe",
            "params": [TOKEN_ACCOUNT, {"address_type": "account"}],
        },
        AccountDiffSubscribe(id=4, address=TOKEN_ACCOUNT, address_type="account"),
        id="accountDiffSubscribe-account",
    ),
    pytest.param({"jsonrpc": "2.0", "id": 1, "result": 7}, RpcResult(1, 7), id="ack"),
    pytest.param(
        {"jsonrpc": "2.0", "id": 9, "result": True}, RpcResult(9, True), id="unsubscribe-ack"
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "code": -32010,
                "message": "replay window exceeded",
                "data": {"oldestSlot": START + 150},
            },
        },
        RpcError(1, REPLAY_WINDOW_EXCEEDED, "replay window exceeded", {"oldestSlot": START + 150}),
        id="error-replay-window",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 5, "error": {"code": -32602, "message": "invalid params"}},
        RpcError(5, INVALID_PARAMS, "invalid params"),
        id="error-invalid-params",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 6, "error": {"code": -32601, "message": "method not found"}},
        RpcError(6, METHOD_NOT_FOUND, "method not found"),
        id="error-method-not-found",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}},
        RpcError(None, PARSE_ERROR, "parse error"),
        id="error-parse",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "transactionNotification",
            "params": {"subscription": 7, "result": TRANSACTION},
        },
        TransactionNotification(7, TransactionPayload(START + 12, SIGNATURE, TRANSACTION)),
        id="transactionNotification",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 8, "result": ACCOUNT_DIFF},
        },
        AccountDiffNotification(
            8,
            AccountDiffPayload(
                START + 12,
                3,
                SIGNATURE,
                TOKEN_ACCOUNT,
                UI_ACCOUNT_PRE,
                UI_ACCOUNT_POST,
                ACCOUNT_DIFF,
            ),
        ),
        id="accountDiffNotification",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 8, "result": {**ACCOUNT_DIFF, "pre": None}},
        },
        AccountDiffNotification(
            8,
            AccountDiffPayload(
                START + 12,
                3,
                SIGNATURE,
                TOKEN_ACCOUNT,
                None,
                UI_ACCOUNT_POST,
                {**ACCOUNT_DIFF, "pre": None},
            ),
        ),
        id="accountDiffNotification-created",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 8, "result": {**ACCOUNT_DIFF, "post": None}},
        },
        AccountDiffNotification(
            8,
            AccountDiffPayload(
                START + 12,
                3,
                SIGNATURE,
                TOKEN_ACCOUNT,
                UI_ACCOUNT_PRE,
                None,
                {**ACCOUNT_DIFF, "post": None},
            ),
        ),
        id="accountDiffNotification-deleted",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 10, "method": "transactionUnsubscribe", "params": [7]},
        TransactionUnsubscribe(id=10, subscription=7),
        id="transactionUnsubscribe",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 11, "method": "accountDiffUnsubscribe", "params": [8]},
        AccountDiffUnsubscribe(id=11, subscription=8),
        id="accountDiffUnsubscribe",
    ),
]


@pytest.mark.parametrize(("wire", "model"), RPC_CASES)
@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "binary"])
def test_rpc_message_decodes(wire: Json, model: Any, as_bytes: bool) -> None:
    data: str | bytes = frame(wire).encode() if as_bytes else frame(wire)
    assert decode_rpc(data) == model


@pytest.mark.parametrize(("wire", "model"), RPC_CASES)
def test_rpc_message_encodes_documented_json(wire: Json, model: Any) -> None:
    assert parsed(encode_rpc(model)) == wire


def test_payload_identities() -> None:
    tx = decode_rpc(
        frame(
            {
                "jsonrpc": "2.0",
                "method": "transactionNotification",
                "params": {"subscription": 1, "result": TRANSACTION},
            }
        )
    )
    assert isinstance(tx, TransactionNotification)
    assert tx.result.signature == SIGNATURE
    assert tx.result.slot == START + 12
    diff = decode_rpc(
        frame(
            {
                "jsonrpc": "2.0",
                "method": "accountDiffNotification",
                "params": {"subscription": 2, "result": ACCOUNT_DIFF},
            }
        )
    )
    assert isinstance(diff, AccountDiffNotification)
    assert diff.result.key == (SIGNATURE, TOKEN_ACCOUNT)


def test_replay_window_error_exposes_the_oldest_slot() -> None:
    error = decode_rpc(
        frame(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "error": {
                    "code": -32010,
                    "message": "replay window exceeded",
                    "data": {"oldestSlot": 42},
                },
            }
        )
    )
    assert isinstance(error, RpcError)
    assert error.oldest_slot == 42
    assert RpcError(1, REPLAY_WINDOW_EXCEEDED, "x", {"oldest_slot": 43}).oldest_slot == 43
    assert RpcError(1, INVALID_PARAMS, "x", {"oldestSlot": 42}).oldest_slot is None
    assert RpcError(1, REPLAY_WINDOW_EXCEEDED, "x", None).oldest_slot is None


def test_rpc_tolerance() -> None:
    # A subscribe without a config, and a snake_case tx index.
    assert decode_rpc(
        frame({"jsonrpc": "2.0", "id": 1, "method": "transactionSubscribe", "params": [JUPITER]})
    ) == TransactionSubscribe(id=1, program_id=JUPITER)
    snake_diff = {**ACCOUNT_DIFF, "context": {"slot": 5, "tx_index": 2}}
    decoded = decode_rpc(
        frame(
            {
                "jsonrpc": "2.0",
                "method": "accountDiffNotification",
                "params": {"subscription": 1, "result": snake_diff},
            }
        )
    )
    assert isinstance(decoded, AccountDiffNotification)
    assert (decoded.result.slot, decoded.result.tx_index) == (5, 2)
    # Config keys spelled camelCase for address_type, and a string request id on answers.
    assert decode_rpc(
        frame(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "accountDiffSubscribe",
                "params": [WALLET, {"addressType": "account"}],
            }
        )
    ) == AccountDiffSubscribe(id=2, address=WALLET, address_type="account")
    assert decode_rpc(frame({"jsonrpc": "2.0", "id": "a1", "result": 3})) == RpcResult("a1", 3)


def test_subscribe_config_extra_keys_are_kept_and_do_not_replace_the_address() -> None:
    wire = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "transactionSubscribe",
        "params": [JUPITER, {"replayFromSlot": 5, "commitment": "confirmed"}],
    }
    decoded = decode_rpc(frame(wire))
    assert isinstance(decoded, TransactionSubscribe)
    assert decoded.extra == {"commitment": "confirmed"}
    assert parsed(encode_rpc(decoded)) == wire
    aliasing = {**wire, "params": [JUPITER, {"programId": TOKEN_PROGRAM}]}
    decoded = decode_rpc(frame(aliasing))
    assert isinstance(decoded, TransactionSubscribe)
    assert decoded.program_id == JUPITER


@pytest.mark.parametrize(
    "raw",
    [
        {"jsonrpc": "2.0", "id": 3, "method": "slotSubscribe", "params": []},
        {
            "jsonrpc": "2.0",
            "method": "slotNotification",
            "params": {"subscription": 1, "result": 5},
        },
    ],
    ids=["request", "notification"],
)
def test_unknown_rpc_methods_keep_the_raw_json(raw: Json) -> None:
    decoded = decode_rpc(frame(raw))
    assert decoded == UnknownMessage(raw["method"], raw)
    assert parsed(encode_rpc(decoded)) == raw


BAD_RPC = [
    pytest.param("not json", None, None, ["rpc message", "not valid JSON"], id="not-json"),
    pytest.param(b"\x00\x01", None, None, ["rpc message", "not valid JSON"], id="binary-garbage"),
    pytest.param("[]", None, None, ["rpc message", "expected a JSON object, got list"], id="list"),
    pytest.param(
        {"jsonrpc": "2.0", "id": 3, "method": "transactionSubscribe", "params": JUPITER},
        "transactionSubscribe",
        3,
        ["transactionSubscribe", "params must be [address, config]"],
        id="subscribe-params-str",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 3, "method": "transactionSubscribe", "params": [7, {}]},
        "transactionSubscribe",
        3,
        ["transactionSubscribe", "address must be a string, got int"],
        id="subscribe-address-int",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 3, "method": "accountDiffSubscribe", "params": [WALLET, 5]},
        "accountDiffSubscribe",
        3,
        ["accountDiffSubscribe", "config must be an object, got int"],
        id="subscribe-config-int",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "transactionSubscribe",
            "params": [JUPITER, {"replayFromSlot": "5"}],
        },
        "transactionSubscribe",
        3,
        ["transactionSubscribe", "key 'replayFromSlot'", "expected an integer, got str"],
        id="subscribe-replay-str",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "accountDiffSubscribe",
            "params": [WALLET, {"address_type": 1}],
        },
        "accountDiffSubscribe",
        3,
        ["accountDiffSubscribe", "key 'address_type'", "expected a string, got int"],
        id="subscribe-address-type-int",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": "x1", "method": "transactionSubscribe", "params": [JUPITER]},
        "transactionSubscribe",
        "x1",
        ["transactionSubscribe", "key 'id'", "expected an integer, got str"],
        id="subscribe-id-str",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": [1], "method": "transactionSubscribe", "params": [JUPITER]},
        None,
        None,
        ["key 'id'", "got list"],
        id="subscribe-id-list",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 4, "method": "transactionUnsubscribe", "params": []},
        "transactionUnsubscribe",
        4,
        ["transactionUnsubscribe", "params must be [subscription id]"],
        id="unsubscribe-empty",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 4, "method": "accountDiffUnsubscribe", "params": ["7"]},
        "accountDiffUnsubscribe",
        4,
        ["accountDiffUnsubscribe", "key 'subscription'", "expected an integer, got str"],
        id="unsubscribe-str",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "transactionNotification"},
        "transactionNotification",
        None,
        ["transactionNotification", "params must be an object, got null"],
        id="notification-no-params",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "transactionNotification", "params": {"result": TRANSACTION}},
        "transactionNotification",
        None,
        ["transactionNotification", "key 'subscription'"],
        id="notification-no-subscription",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "transactionNotification",
            "params": {
                "subscription": 1,
                "result": {**TRANSACTION, "transaction": {"signatures": []}},
            },
        },
        "transactionNotification",
        None,
        ["transactionNotification", "key 'transaction.signatures'"],
        id="transaction-no-signature",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "transactionNotification",
            "params": {"subscription": 1, "result": {**TRANSACTION, "slot": "12"}},
        },
        "transactionNotification",
        None,
        ["transactionNotification", "key 'slot'", "integer"],
        id="transaction-slot-str",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "transactionNotification",
            "params": {"subscription": 1, "result": None},
        },
        "transactionNotification",
        None,
        ["transactionNotification", "result must be an object"],
        id="transaction-null",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 1, "result": {**ACCOUNT_DIFF, "context": 5}},
        },
        "accountDiffNotification",
        None,
        ["accountDiffNotification", "key 'context'"],
        id="diff-context-int",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 1, "result": {**ACCOUNT_DIFF, "context": {"txIndex": 1}}},
        },
        "accountDiffNotification",
        None,
        ["accountDiffNotification", "key 'slot'"],
        id="diff-no-slot",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 1, "result": {**ACCOUNT_DIFF, "signature": None}},
        },
        "accountDiffNotification",
        None,
        ["accountDiffNotification", "key 'signature'"],
        id="diff-no-signature",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "method": "accountDiffNotification",
            "params": {"subscription": 1, "result": {**ACCOUNT_DIFF, "pre": [1]}},
        },
        "accountDiffNotification",
        None,
        ["accountDiffNotification", "key 'pre'"],
        id="diff-pre-list",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": "-32010", "message": "x"}},
        None,
        None,
        ["rpc error", "key 'code'", "got str"],
        id="error-code-str",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32010, "message": 5}},
        None,
        None,
        ["rpc error", "key 'message'", "got int"],
        id="error-message-int",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1, "error": "boom"},
        None,
        None,
        ["rpc error", "key 'error'", "got str"],
        id="error-str",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1},
        None,
        None,
        ["rpc message", "'method', 'result' or 'error'"],
        id="nothing",
    ),
]


@pytest.mark.parametrize(("data", "method", "rpc_id", "fragments"), BAD_RPC)
def test_bad_rpc_message_names_method_and_key(
    data: Any, method: str | None, rpc_id: int | str | None, fragments: list[str]
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_rpc(data if isinstance(data, str | bytes) else frame(data))
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text
    assert info.value.method == method
    assert info.value.rpc_id == rpc_id
    assert isinstance(info.value, ValueError)


# ---------------------------------------------------------------- plausibility (§7)

#: Values a slot or seqId may not take, as JSON text: negative, beyond 64 bits (orjson
#: reads it as a float), float, string, boolean, object, list.
NOT_U64 = ["-1", "-9223372036854775808", "18446744073709551616", "1.5", "7.0", '"7"', "true"]
NOT_U64 += ['{"slot": 7}', "[7]"]

#: Where slots and seqIds travel, with ``%s`` for the value, and what the error names.
U64_SITES = [
    ('{"method": "slotNotification", "params": %s}', "params must be a slot"),
    ('{"method": "paused", "params": {"slot": %s, "batchIndex": 0}}', "key 'slot'"),
    (
        '{"method": "discoveryBatch", "params": {"slot": %s, "batchIndex": 0, "transactions": []}}',
        "key 'slot'",
    ),
    (
        '{"method": "sessionsCreatedV2", "params": {"controlSessionId": "c", "sessionIds": ["a"],'
        ' "startSlots": [%s], "endSlots": [9]}}',
        "key 'startSlots'",
    ),
    ('{"method": "readyForContinue", "seqId": %s}', "'seqId'"),
    (
        '{"method": "sessionEventV2", "params": {"sessionId": "a", "seqId": %s,'
        ' "event": {"method": "readyForContinue"}}}',
        "'seqId'",
    ),
    (
        '{"method": "createBacktestSession", "params": {"startSlot": %s, "endSlot": 9}}',
        "'startSlot'",
    ),
    ('{"method": "continueTo", "params": {"slot": %s, "batchIndex": null}}', "key 'slot'"),
    (
        '{"method": "attachBacktestSession", "params": {"session_id": "a", "last_sequence": %s}}',
        "key 'last_sequence'",
    ),
    (
        '{"method": "attachParallelControlSessionV2",'
        ' "params": {"control_session_id": "c", "last_sequences": {"a": %s}}}',
        "key 'last_sequences'",
    ),
]
U64_RPC_SITES = [
    (
        '{"jsonrpc": "2.0", "method": "transactionNotification", "params": {"subscription": 1,'
        ' "result": {"slot": %s, "transaction": {"signatures": ["s"]}}}}',
        "key 'slot'",
    ),
    (
        '{"jsonrpc": "2.0", "method": "accountDiffNotification", "params": {"subscription": 1,'
        ' "result": {"context": {"slot": %s}, "account": "a", "signature": "s",'
        ' "pre": null, "post": null}}}',
        "key 'slot'",
    ),
    (
        '{"jsonrpc": "2.0", "id": 1, "method": "transactionSubscribe",'
        ' "params": ["a", {"replayFromSlot": %s}]}',
        "'replayFromSlot'",
    ),
]


@pytest.mark.parametrize("value", NOT_U64)
@pytest.mark.parametrize(("site", "names"), U64_SITES + U64_RPC_SITES)
def test_slots_and_seq_ids_are_unsigned_64_bit(site: str, names: str, value: str) -> None:
    decode = decode_rpc if '"jsonrpc"' in site else decode_control
    with pytest.raises(ProtocolError) as info:
        decode(site % value)
    assert names in str(info.value)


@pytest.mark.parametrize(("site", "names"), U64_SITES + U64_RPC_SITES)
def test_the_bounds_of_unsigned_64_bit_are_accepted(site: str, names: str) -> None:
    decode = decode_rpc if '"jsonrpc"' in site else decode_control
    for value in ("0", str(2**64 - 1)):
        decode(site % value)


@pytest.mark.parametrize("value", NOT_U64)
def test_a_replay_window_error_with_an_implausible_oldest_slot_offers_none(value: str) -> None:
    error = decode_rpc(
        '{"jsonrpc": "2.0", "id": 1, "error": {"code": -32010, "message": "x",'
        f' "data": {{"oldestSlot": {value}}}}}}}'
    )
    assert isinstance(error, RpcError)
    assert error.oldest_slot is None


def test_encoders_refuse_foreign_values() -> None:
    with pytest.raises(TypeError):
        encode_control(RpcResult(1, True))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_rpc(ReadyForContinue())  # type: ignore[arg-type]
