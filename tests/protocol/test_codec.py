"""The codec's tolerance rules and the exact errors it reports.

A `ProtocolError`'s text is what a user reads in a log or a ``Failed`` reason, so each is
written down here in full, with the method (and JSON-RPC id) the error carries.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any, NoReturn, cast

import orjson
import pytest

from trio_backtest.protocol import (
    AccountData,
    Continue,
    DiscoveryBatch,
    Paused,
    ProtocolError,
    ReadyForContinue,
    RpcError,
    codec,
    decode_control,
    decode_rpc,
    encode_control,
    encode_rpc,
)
from trio_backtest.protocol.codec import decode_account_data

OWNER = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
ACCOUNT = {"executable": False, "lamports": 5, "owner": OWNER, "space": 3}


def control(method: str, params: Any) -> str:
    return orjson.dumps({"method": method, "params": params}).decode()


def rpc(message: dict[str, Any]) -> str:
    return orjson.dumps({"jsonrpc": "2.0", **message}).decode()


def modify(account: Any) -> str:
    return control("continue", {"modifyAccountStates": {"acc": account}})


# ---------------------------------------------------------------- tolerance (protocol.md)


@pytest.mark.parametrize(
    "params",
    [
        {"slot": 5, "batch_index": 1, "batchIndex": 2},
        {"slot": 5, "batchIndex": 2, "batch_index": 1},
    ],
    ids=["snake-first", "camel-first"],
)
def test_the_camel_case_key_wins_over_its_snake_case_twin(params: dict[str, Any]) -> None:
    # protocol.md accepts both spellings; with both present, the documented one counts.
    decoded = decode_control(control("paused", params)).message
    assert decoded == Paused(slot=5, batch_index=2)


def test_an_account_without_an_encoding_is_base64() -> None:
    decoded = decode_control(modify({**ACCOUNT, "data": {"data": "AAAA"}})).message
    assert isinstance(decoded, Continue)
    state = decoded.params.modify_account_states["acc"]
    assert (state.data, state.encoding) == ("AAAA", "base64")


def test_an_account_in_the_ui_account_spelling_keeps_its_encoding() -> None:
    decoded = decode_control(modify({**ACCOUNT, "data": ["3yZe7d", "base58"]})).message
    assert isinstance(decoded, Continue)
    state = decoded.params.modify_account_states["acc"]
    assert (state.data, state.encoding) == ("3yZe7d", "base58")


def test_decode_account_data_reads_both_spellings() -> None:
    expected = AccountData(data="AAAA", executable=False, lamports=5, owner=OWNER, space=3)
    assert decode_account_data({**ACCOUNT, "data": {"data": "AAAA", "encoding": "base64"}}) == (
        expected
    )
    assert decode_account_data({**ACCOUNT, "data": ["AAAA", "base64"]}) == expected


def test_a_discovered_transaction_without_an_encoding_is_base64() -> None:
    params = {"slot": 7, "batchIndex": 0, "transactions": [{"data": "AQID"}, "BAUG"]}
    decoded = decode_control(control("discoveryBatch", params)).message
    assert decoded == DiscoveryBatch(slot=7, batch_index=0, transactions=("AQID", "BAUG"))


def test_an_rpc_error_without_a_message_has_an_empty_one() -> None:
    decoded = decode_rpc(rpc({"id": 4, "error": {"code": -32000}}))
    assert decoded == RpcError(4, -32000, "", None)


# ---------------------------------------------------------------- errors, word for word

BAD_CONTROL: list[Any] = [
    pytest.param(b"\x00", None, r"control message: not valid JSON \(.+\)", id="not-json"),
    pytest.param(
        "[]", None, "control message: expected a JSON object, got list", id="not-an-object"
    ),
    pytest.param(
        "{}", None, "control message: key 'method' must be a string, got null", id="no-method"
    ),
    pytest.param(
        control("continueToSessionV1", [1]),
        "continueToSessionV1",
        "continueToSessionV1: expected an object, got list",
        id="continue-to-v1-list",
    ),
    pytest.param(
        control("sessionEventV2", [1]),
        "sessionEventV2",
        "sessionEventV2: expected an object, got list",
        id="event-v2-list",
    ),
    pytest.param(
        control("sessionEventV2", {"sessionId": 1, "seqId": 1, "event": {}}),
        "sessionEventV2",
        "sessionEventV2: key 'sessionId' must be a string, got int",
        id="event-v2-session-int",
    ),
    pytest.param(
        control("sessionEventV2", {"sessionId": "s", "seqId": "1", "event": {}}),
        "sessionEventV2",
        "sessionEventV2: key 'seqId' must be an unsigned 64-bit integer, got str",
        id="event-v2-seq-str",
    ),
    pytest.param(
        control("sessionEventV2", {"sessionId": "s", "seqId": 1, "event": {"params": 1}}),
        "sessionEventV2",
        # (The inner prefix repeats the outer one; either reading is fine.)
        r"sessionEventV2\.event: (sessionEventV2\.event: )?key 'method' must be a string, "
        "got null",
        id="event-v2-event-no-method",
    ),
    pytest.param(
        control("error", 5),
        "error",
        "error: expected a variant name or a one-key object, got 5",
        id="error-int",
    ),
    pytest.param(
        control("createBacktestSession", {"parallel": True, "endSlot": 9}),
        "createBacktestSession",
        "createBacktestSession: missing key 'startSlot'",
        id="parallel-create-no-start",
    ),
    pytest.param(
        control("paused", {"slot": -1, "batchIndex": 0}),
        "paused",
        "paused: key 'slot': a slot or seqId: expected an unsigned 64-bit integer, got -1",
        id="paused-negative-slot",
    ),
    pytest.param(
        control("continue", {"transactions": "AQID"}),
        "continue",
        "continue: key 'transactions': expected a list, got str",
        id="transactions-str",
    ),
    pytest.param(
        control("continue", {"modifyAccountStates": []}),
        "continue",
        "continue: key 'modifyAccountStates': expected an object, got list",
        id="accounts-list",
    ),
    pytest.param(
        modify(5),
        "continue",
        "continue: key 'modifyAccountStates': expected an object, got int",
        id="account-int",
    ),
    pytest.param(
        modify({**ACCOUNT, "data": "ab"}),
        "continue",
        "continue: key 'modifyAccountStates': key 'data' must be {'data': str, 'encoding': str}",
        id="account-data-str",
    ),
    pytest.param(
        modify({"data": {"data": "AAAA"}, "executable": True}),
        "continue",
        "continue: key 'modifyAccountStates': AccountData: missing key 'lamports'",
        id="account-no-lamports",
    ),
    pytest.param(
        control("discoveryBatch", {"slot": 1, "batchIndex": 0, "transactions": [{"data": 1}]}),
        "discoveryBatch",
        "discoveryBatch: key 'transactions': transaction 0: 'data' and 'encoding' must be strings",
        id="discovered-data-int",
    ),
    pytest.param(
        control(
            "discoveryBatch",
            {"slot": 1, "batchIndex": 0, "transactions": [{"data": "0", "encoding": "base58"}]},
        ),
        "discoveryBatch",
        "discoveryBatch: key 'transactions': transaction 0: invalid base58 character '0'",
        id="discovered-bad-base58",
    ),
]


@pytest.mark.parametrize(("data", "method", "message"), BAD_CONTROL)
def test_bad_control_frames_are_reported_word_for_word(
    data: str | bytes, method: str | None, message: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_control(data)
    assert re.fullmatch(message, str(info.value)), str(info.value)
    assert info.value.method == method


def test_a_frame_of_the_wrong_type_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"^control message: not valid JSON \("):
        decode_control(5)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=r"^rpc message: not valid JSON \("):
        decode_rpc(None)  # type: ignore[arg-type]


BAD_RPC: list[Any] = [
    pytest.param("{", None, None, r"rpc message: not valid JSON \(.+\)", id="not-json"),
    pytest.param(
        rpc({"method": 5}),
        None,
        None,
        "rpc message: key 'method' must be a string, got int",
        id="method-int",
    ),
    pytest.param(
        rpc({"method": "transactionNotification", "params": [1]}),
        "transactionNotification",
        None,
        "transactionNotification: params must be an object, got list",
        id="notification-list",
    ),
    pytest.param(
        rpc({"id": 3, "method": "transactionSubscribe", "params": {"address": "a"}}),
        "transactionSubscribe",
        3,
        "transactionSubscribe: params must be \\[address, config\\]",
        id="subscribe-object",
    ),
    pytest.param(
        rpc({"id": 3, "method": "accountDiffSubscribe", "params": ["a", {}, {}]}),
        "accountDiffSubscribe",
        3,
        "accountDiffSubscribe: params must be \\[address, config\\]",
        id="subscribe-three",
    ),
    pytest.param(
        rpc({"id": 3}),
        None,
        None,
        "rpc message: expected 'method', 'result' or 'error'",
        id="nothing",
    ),
]


@pytest.mark.parametrize(("data", "method", "rpc_id", "message"), BAD_RPC)
def test_bad_rpc_frames_are_reported_word_for_word(
    data: str, method: str | None, rpc_id: int | None, message: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_rpc(data)
    assert re.fullmatch(message, str(info.value)), str(info.value)
    assert (info.value.method, info.value.rpc_id) == (method, rpc_id)


def test_decode_account_data_errors() -> None:
    with pytest.raises(ProtocolError, match=r"^expected an object, got list$"):
        decode_account_data([])
    with pytest.raises(ProtocolError, match=r"^AccountData: missing key 'owner'$"):
        decode_account_data({"data": ["AAAA", "base64"], "executable": True, "lamports": 1})


def test_encoders_name_what_they_cannot_encode() -> None:
    with pytest.raises(TypeError, match=r"^not a control message: object$"):
        encode_control(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^not a data-plane message: ReadyForContinue$"):
        encode_rpc(ReadyForContinue())  # type: ignore[arg-type]


# The defensive nets: every decoder is meant to raise ProtocolError only, and the entry
# points promise "nothing else is ever raised". These tests break a part on purpose and
# check that the failure still reaches the caller as a ProtocolError saying where.


class _Boom(Exception):
    def __repr__(self) -> str:
        return "Boom()"

    def __str__(self) -> str:
        return "boom"


def _explode(*_: object) -> NoReturn:
    raise _Boom


class _BrokenConverter:
    structure = staticmethod(_explode)


def test_a_decoder_failing_otherwise_is_still_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(cast(dict[str, Any], codec._CONTROL_DECODERS), "paused", _explode)
    with pytest.raises(ProtocolError) as info:
        decode_control(b'{"method": "paused", "params": {"slot": 5}}')
    assert str(info.value) == "paused: malformed message (Boom())"
    assert info.value.method == "paused"


def test_a_data_plane_decoder_failing_otherwise_is_still_a_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "_decode_rpc_object", _explode)
    with pytest.raises(ProtocolError) as info:
        decode_rpc(b'{"jsonrpc": "2.0", "id": 1, "result": 7}')
    assert str(info.value) == "rpc message: malformed (Boom())"


def test_a_field_the_converter_fails_on_is_named_with_its_wire_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(codec, "_converter", _BrokenConverter())
    with pytest.raises(ProtocolError) as info:
        decode_control(b'{"method": "continue", "params": {"advanceCount": 5}}')
    assert str(info.value) == "continue: key 'advanceCount' is malformed (boom)"
    assert info.value.method == "continue"
    with pytest.raises(ProtocolError) as info:
        decode_account_data({"lamports": 1})
    assert str(info.value) == "AccountData: boom"


FRESH_FRAMES = [
    b'{"method": "paused", "params": {"slot": 5}}',
    b'{"method": "attachParallelControlSessionV2", "params": '
    b'{"control_session_id": "c", "last_sequences": {"s": 3}}}',
]


def test_a_fresh_interpreter_decodes_with_the_codec_alone() -> None:
    # The codec resolves its models' annotations itself: a program that imports nothing
    # else first decodes integers, mappings and records as this process does.
    script = "\n".join(
        ["from trio_backtest.protocol.codec import decode_control"]
        + [f"print(decode_control({frame!r}).message)" for frame in FRESH_FRAMES]
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    expected = [
        "Paused(slot=5, batch_index=None)",
        "AttachParallelControlSessionV2(control_session_id='c', last_sequences={'s': 3})",
    ]
    assert output.splitlines() == expected
    assert [repr(decode_control(frame).message) for frame in FRESH_FRAMES] == expected
