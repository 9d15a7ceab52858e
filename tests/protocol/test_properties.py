"""Property tests of the codec: round trips for every model, and no crash on any input.

Runs derandomized (the same examples every run) with modest example counts, so the
file stays deterministic and takes a few seconds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trio_backtest.protocol import (
    ERROR_VARIANTS,
    AccountData,
    AccountDiffNotification,
    AccountDiffPayload,
    AccountDiffSubscribe,
    AccountDiffUnsubscribe,
    AttachBacktestSession,
    AttachParallelControlSessionV2,
    BacktestError,
    CloseBacktestSession,
    CloseSessionV1,
    Completed,
    Continue,
    ContinueParams,
    ContinueSessionV1,
    ContinueTo,
    ContinueToSessionV1,
    CreateBacktestSession,
    CreateSessionParams,
    Discovery,
    DiscoveryBatch,
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
    SessionsCreatedV2,
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
from trio_backtest.protocol._fields import camel, snake

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_SETTINGS = settings(SETTINGS, max_examples=100)

# ---------------------------------------------------------------- JSON building blocks

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
naturals = st.integers(min_value=0, max_value=2**63 - 1)
#: Slots and seqIds: unsigned 64-bit integers (protocol.md §7).
slots = st.integers(min_value=0, max_value=2**64 - 1)
texts = st.text(max_size=16)
keys = st.text(max_size=10)
json_scalars = (
    st.none() | st.booleans() | ints | st.floats(allow_nan=False, allow_infinity=False) | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=4)


def spellings(*names: str) -> set[str]:
    """Every spelling a decoder maps to a known field."""
    return {spelling for name in names for spelling in (name, camel(name), snake(name))}


def field_names(cls: type[Any]) -> set[str]:
    return spellings(*(f.name for f in attrs.fields(cls) if f.name != "extra"))


def extras(forbidden: set[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Unknown keys that do not collide with a known key's spellings."""
    return st.dictionaries(keys.filter(lambda k: k not in forbidden), json_values, max_size=3)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# ---------------------------------------------------------------- control models

discoveries = st.builds(Discovery, program_executed=texts, extra=extras(field_names(Discovery)))
create_params = st.builds(
    CreateSessionParams,
    start_slot=slots,
    end_slot=slots,
    signer_filter=optional(st.lists(texts, max_size=3).map(tuple)),
    send_summary=optional(st.booleans()),
    disconnect_timeout_secs=optional(ints),
    capacity_wait_timeout_secs=optional(ints),
    extra_compute_units=optional(ints),
    discoveries=optional(st.lists(discoveries, max_size=3).map(tuple)),
    extra=extras(field_names(CreateSessionParams) | {"parallel"}),
)
accounts = st.builds(
    AccountData,
    data=texts,
    executable=st.booleans(),
    lamports=ints,
    owner=texts,
    space=ints,
    encoding=texts,
)
continue_params = st.builds(
    ContinueParams,
    advance_count=st.integers(min_value=1, max_value=2**63 - 1),
    transactions=st.lists(texts, max_size=3).map(tuple),
    modify_account_states=st.dictionaries(keys, accounts, max_size=3),
    extra=extras(field_names(ContinueParams)),
)

CLIENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    CreateBacktestSession: st.builds(
        CreateBacktestSession, params=create_params, parallel=st.booleans()
    ),
    Continue: st.builds(Continue, params=continue_params),
    ContinueTo: st.builds(
        ContinueTo, slot=slots, batch_index=ints, extra=extras(field_names(ContinueTo))
    ),
    CloseBacktestSession: st.just(CloseBacktestSession()),
    AttachBacktestSession: st.builds(
        AttachBacktestSession,
        session_id=texts,
        last_sequence=optional(slots),
        extra=extras(field_names(AttachBacktestSession)),
    ),
    ResumeAttachedSession: st.just(ResumeAttachedSession()),
    ContinueSessionV1: st.builds(
        ContinueSessionV1,
        session_id=texts,
        params=continue_params,
        extra=extras(field_names(ContinueSessionV1)),
    ),
    ContinueToSessionV1: st.builds(
        ContinueToSessionV1,
        session_id=texts,
        slot=slots,
        batch_index=ints,
        extra=extras(spellings("session_id", "params")),
    ),
    CloseSessionV1: st.builds(
        CloseSessionV1, session_id=texts, extra=extras(field_names(CloseSessionV1))
    ),
    AttachParallelControlSessionV2: st.builds(
        AttachParallelControlSessionV2,
        control_session_id=texts,
        last_sequences=st.dictionaries(keys, slots, max_size=3),
        extra=extras(field_names(AttachParallelControlSessionV2)),
    ),
}


def _error_field(name: str) -> st.SearchStrategy[Any]:
    return ints if name in {"index", "slot"} else texts


def known_errors(cls: type[BacktestError]) -> st.SearchStrategy[BacktestError]:
    return st.builds(cls, **{f.name: _error_field(f.name) for f in attrs.fields(cls)})


def _is_unknown_variant(name: str) -> bool:
    return name not in ERROR_VARIANTS and name[:1].upper() + name[1:] not in ERROR_VARIANTS


backtest_errors = st.one_of(
    *(known_errors(cls) for cls in ERROR_VARIANTS.values()),
    st.builds(
        UnknownBacktestError,
        variant=texts.filter(_is_unknown_variant),
        fields=optional(json_objects),
    ),
)

EVENT_METHODS = {
    cls.method
    for cls in (ReadyForContinue, Slot, Status, Paused, DiscoveryBatch, Completed, Success)
} | {ServerError.method}
CONTROL_METHODS = (
    EVENT_METHODS
    | {cls.method for cls in CLIENT_STRATEGIES}
    | {
        SessionCreated.method,
        SessionAttached.method,
        SessionsCreatedV2.method,
        ParallelSessionAttachedV2.method,
        SessionEventV2.method,
    }
)


def unknown_messages(excluded: set[str], reserved: set[str]) -> st.SearchStrategy[UnknownMessage]:
    """Messages with a method outside ``excluded``; ``reserved`` keys stay out of the raw."""

    def build(method: str, rest: dict[str, Any]) -> UnknownMessage:
        return UnknownMessage(method, {**rest, "method": method})

    return st.builds(
        build,
        texts.filter(lambda m: m not in excluded),
        st.dictionaries(keys.filter(lambda k: k not in reserved), json_values, max_size=3),
    )


EVENT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    ReadyForContinue: st.just(ReadyForContinue()),
    Slot: st.builds(Slot, slots),
    Status: st.builds(Status, status=texts, extra=extras(field_names(Status))),
    Paused: st.builds(Paused, slot=slots, batch_index=ints, extra=extras(field_names(Paused))),
    DiscoveryBatch: st.builds(
        DiscoveryBatch,
        slot=slots,
        batch_index=ints,
        transactions=st.lists(texts, max_size=3).map(tuple),
        extra=extras(field_names(DiscoveryBatch)),
    ),
    Completed: st.builds(
        Completed,
        summary=optional(json_objects),
        agent_stats=json_values,
        extra=extras(field_names(Completed)),
    ),
    Success: st.just(Success()),
    ServerError: st.builds(ServerError, backtest_errors),
}
server_events = st.one_of(*EVENT_STRATEGIES.values(), unknown_messages(EVENT_METHODS, {"method"}))

SERVER_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    SessionCreated: st.builds(
        SessionCreated,
        session_id=texts,
        rpc_endpoint=texts,
        extra=extras(field_names(SessionCreated)),
    ),
    SessionAttached: st.builds(
        SessionAttached,
        session_id=texts,
        rpc_endpoint=texts,
        extra=extras(field_names(SessionAttached)),
    ),
    SessionsCreatedV2: st.builds(
        SessionsCreatedV2,
        control_session_id=texts,
        session_ids=st.lists(texts, max_size=3).map(tuple),
        start_slots=st.lists(slots, max_size=3).map(tuple),
        end_slots=st.lists(slots, max_size=3).map(tuple),
        extra=extras(field_names(SessionsCreatedV2)),
    ),
    ParallelSessionAttachedV2: st.builds(
        ParallelSessionAttachedV2,
        control_session_id=texts,
        session_ids=st.lists(texts, max_size=3).map(tuple),
        extra=extras(field_names(ParallelSessionAttachedV2)),
    ),
    **EVENT_STRATEGIES,
    SessionEventV2: st.builds(
        SessionEventV2,
        session_id=texts,
        seq_id=slots,
        event=server_events,
        extra=extras(spellings("session_id", "seq_id", "event")),
    ),
}

CONTROL_STRATEGIES = {
    **CLIENT_STRATEGIES,
    **SERVER_STRATEGIES,
    UnknownMessage: unknown_messages(CONTROL_METHODS, {"method", "seqId", "seq_id"}),
}
control_messages = st.one_of(*CONTROL_STRATEGIES.values())


def test_every_control_model_has_a_strategy() -> None:
    assert set(CONTROL_STRATEGIES) >= {
        CreateBacktestSession,
        Continue,
        ContinueTo,
        CloseBacktestSession,
        AttachBacktestSession,
        ResumeAttachedSession,
        ContinueSessionV1,
        ContinueToSessionV1,
        CloseSessionV1,
        AttachParallelControlSessionV2,
        SessionCreated,
        SessionAttached,
        SessionsCreatedV2,
        ParallelSessionAttachedV2,
        ReadyForContinue,
        Slot,
        Status,
        Paused,
        DiscoveryBatch,
        Completed,
        Success,
        ServerError,
        SessionEventV2,
        UnknownMessage,
    }
    assert len(CONTROL_STRATEGIES) == 24


@pytest.mark.parametrize(
    "strategy", CONTROL_STRATEGIES.values(), ids=[cls.__name__ for cls in CONTROL_STRATEGIES]
)
@SETTINGS
@given(data=st.data(), seq_id=optional(naturals))
def test_control_round_trip(
    strategy: st.SearchStrategy[Any], data: st.DataObject, seq_id: int | None
) -> None:
    message = data.draw(strategy)
    wrapped = Sequenced(seq_id, message)
    assert decode_control(encode_control(message)) == Sequenced(None, message)
    for snake_case, seq_key in ((False, "seqId"), (True, "seq_id")):
        expected = wrapped
        if isinstance(message, UnknownMessage) and seq_id is not None:
            # An unknown message's raw JSON is the whole object, sequence number included.
            raw = {**message.raw, seq_key: seq_id}
            expected = Sequenced(seq_id, UnknownMessage(message.method, raw))
        assert decode_control(encode_control(wrapped, snake_case=snake_case)) == expected


@SETTINGS
@given(message=control_messages)
def test_control_decodes_from_a_binary_frame(message: Any) -> None:
    assert decode_control(encode_control(message).encode()) == Sequenced(None, message)


# ---------------------------------------------------------------- data-plane models


def transaction_payloads() -> st.SearchStrategy[TransactionPayload]:
    def build(
        slot: int, signatures: list[str], message: dict[str, Any], rest: dict[str, Any]
    ) -> TransactionPayload:
        raw = {
            **rest,
            "slot": slot,
            "transaction": {"signatures": signatures, "message": message},
        }
        return TransactionPayload.from_raw(raw)

    return st.builds(
        build,
        slots,
        st.lists(texts, min_size=1, max_size=2),
        json_objects,
        st.dictionaries(
            keys.filter(lambda k: k not in {"slot", "transaction"}), json_values, max_size=3
        ),
    )


def account_diff_payloads() -> st.SearchStrategy[AccountDiffPayload]:
    def build(
        slot: int,
        tx_index: int | None,
        signature: str,
        account: str,
        pre: dict[str, Any] | None,
        post: dict[str, Any] | None,
    ) -> AccountDiffPayload:
        context: dict[str, Any] = {"slot": slot}
        if tx_index is not None:
            context["txIndex"] = tx_index
        raw = {
            "context": context,
            "account": account,
            "signature": signature,
            "pre": pre,
            "post": post,
        }
        return AccountDiffPayload.from_raw(raw)

    return st.builds(
        build,
        slots,
        optional(ints),
        texts,
        texts,
        optional(json_objects),
        optional(json_objects),
    )


rpc_ids = st.none() | ints | texts
RPC_METHODS = {
    TransactionSubscribe.method,
    AccountDiffSubscribe.method,
    TransactionUnsubscribe.method,
    AccountDiffUnsubscribe.method,
    TransactionNotification.method,
    AccountDiffNotification.method,
}


def rpc_unknown() -> st.SearchStrategy[UnknownMessage]:
    def build(method: str, rpc_id: Any, with_id: bool, rest: dict[str, Any]) -> UnknownMessage:
        raw = {**rest, "jsonrpc": "2.0", "method": method}
        if with_id:
            raw["id"] = rpc_id
        return UnknownMessage(method, raw)

    return st.builds(
        build,
        texts.filter(lambda m: m not in RPC_METHODS),
        rpc_ids,
        st.booleans(),
        st.dictionaries(
            keys.filter(lambda k: k not in {"id", "method", "jsonrpc"}), json_values, max_size=3
        ),
    )


RPC_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {
    TransactionSubscribe: st.builds(
        TransactionSubscribe,
        id=ints,
        program_id=texts,
        replay_from_slot=optional(slots),
        compression=optional(texts),
        extra=extras(field_names(TransactionSubscribe)),
    ),
    AccountDiffSubscribe: st.builds(
        AccountDiffSubscribe,
        id=ints,
        address=texts,
        address_type=optional(texts),
        replay_from_slot=optional(slots),
        compression=optional(texts),
        extra=extras(field_names(AccountDiffSubscribe)),
    ),
    TransactionUnsubscribe: st.builds(TransactionUnsubscribe, id=ints, subscription=ints),
    AccountDiffUnsubscribe: st.builds(AccountDiffUnsubscribe, id=ints, subscription=ints),
    RpcResult: st.builds(RpcResult, id=rpc_ids, result=json_values),
    RpcError: st.builds(RpcError, id=rpc_ids, code=ints, message=texts, data=json_values),
    TransactionNotification: st.builds(
        TransactionNotification, subscription=ints, result=transaction_payloads()
    ),
    AccountDiffNotification: st.builds(
        AccountDiffNotification, subscription=ints, result=account_diff_payloads()
    ),
    UnknownMessage: rpc_unknown(),
}
rpc_messages = st.one_of(*RPC_STRATEGIES.values())


@pytest.mark.parametrize(
    "strategy", RPC_STRATEGIES.values(), ids=[cls.__name__ for cls in RPC_STRATEGIES]
)
@SETTINGS
@given(data=st.data(), as_bytes=st.booleans())
def test_rpc_round_trip(
    strategy: st.SearchStrategy[Any], data: st.DataObject, as_bytes: bool
) -> None:
    message = data.draw(strategy)
    text = encode_rpc(message)
    assert orjson.loads(text).get("jsonrpc") == "2.0"
    assert decode_rpc(text.encode() if as_bytes else text) == message


# ---------------------------------------------------------------- no crash on any input

Decoder = Callable[[str | bytes], Any]
DECODERS: list[Decoder] = [decode_control, decode_rpc]


def decodes_or_refuses(data: str | bytes) -> None:
    """Each decoder returns a value or raises ProtocolError; what it accepts re-encodes."""
    for decode in DECODERS:
        refusal = ""
        try:
            value = decode(data)
        except ProtocolError as exc:
            refusal = str(exc)
        if refusal:
            continue
        if decode is decode_control:
            assert isinstance(value, Sequenced)
            again = decode_control(encode_control(value))
            if not isinstance(value.message, UnknownMessage):
                assert again == value
        else:
            assert decode_rpc(encode_rpc(value)) == value


@FUZZ_SETTINGS
@given(data=st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    decodes_or_refuses(data)


@FUZZ_SETTINGS
@given(data=st.text(max_size=64))
def test_arbitrary_text(data: str) -> None:
    decodes_or_refuses(data)


@FUZZ_SETTINGS
@given(value=json_values)
def test_arbitrary_json(value: Any) -> None:
    decodes_or_refuses(orjson.dumps(value))


@FUZZ_SETTINGS
@given(
    method=st.sampled_from(sorted(CONTROL_METHODS | RPC_METHODS)),
    params=json_values,
    rest=json_objects,
)
def test_arbitrary_params_under_every_known_method(method: str, params: Any, rest: Any) -> None:
    decodes_or_refuses(orjson.dumps({**rest, "method": method, "params": params}))
    decodes_or_refuses(orjson.dumps({**rest, "method": method, "params": params, "id": 1}))


Path = tuple[str | int, ...]


def paths(value: Any, prefix: Path = ()) -> Iterator[Path]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, (*prefix, index))


def retype(value: Any) -> Any:
    """The same content as another JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    if isinstance(value, dict):
        return list(value.values())
    return False


MUTATIONS = ("drop", "replace", "retype", "wrap", "unwrap", "null", "add", "respell")


def mutate(data: st.DataObject, doc: Any) -> Any:
    doc = copy.deepcopy(doc)
    path = data.draw(st.sampled_from(list(paths(doc))), label="path")
    kind = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    target = doc
    for step in path:
        target = target[step]
    new: Any
    if kind == "drop":
        if not path:
            return {}
        new = None
    elif kind == "replace":
        new = data.draw(json_values, label="replacement")
    elif kind == "retype":
        new = retype(target)
    elif kind == "wrap":
        new = data.draw(st.sampled_from(["list", "object"]))
        new = [target] if new == "list" else {"value": target}
    elif kind == "unwrap":
        if isinstance(target, dict) and target:
            new = next(iter(target.values()))
        elif isinstance(target, list) and target:
            new = target[0]
        else:
            new = target
    elif kind == "null":
        new = None
    elif kind == "add":
        if isinstance(target, dict):
            target[data.draw(keys, label="key")] = data.draw(json_values, label="value")
        return doc
    else:  # respell every key of this object the other way round
        if isinstance(target, dict):
            respelled = {(snake(k) if camel(k) == k else camel(k)): v for k, v in target.items()}
            target.clear()
            target.update(respelled)
        return doc
    if not path:
        return new
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if kind == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


@FUZZ_SETTINGS
@given(data=st.data(), message=control_messages, rounds=st.integers(1, 3))
def test_mutated_control_messages(data: st.DataObject, message: Any, rounds: int) -> None:
    doc = orjson.loads(encode_control(message))
    for _ in range(rounds):
        doc = mutate(data, doc)
    decodes_or_refuses(orjson.dumps(doc))


@FUZZ_SETTINGS
@given(data=st.data(), message=rpc_messages, rounds=st.integers(1, 3))
def test_mutated_rpc_messages(data: st.DataObject, message: Any, rounds: int) -> None:
    doc = orjson.loads(encode_rpc(message))
    for _ in range(rounds):
        doc = mutate(data, doc)
    decodes_or_refuses(orjson.dumps(doc))
