"""The one module that owns the wire: spellings, envelopes and tolerance.

Four entry points, relied on by the client, the local server and the tests:

* ``encode_control`` / ``decode_control`` for the control socket;
* ``encode_rpc`` / ``decode_rpc`` for the data plane.

Decoders accept camelCase and snake_case for every multi-word key, a missing or
``null`` ``params``, and unknown extra keys (kept in the model's ``extra``). Unknown
methods decode to ``UnknownMessage``. Anything that breaks ``protocol.md``
raises ``ProtocolError`` naming the method and key; the decoders raise nothing
else.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar, cast, get_args, get_origin

import attrs
import orjson
from cattrs.preconf.orjson import make_converter

from . import _control as c
from . import _errors_model as e
from . import _rpc as r
from ._base58 import base58_decode
from ._errors import ProtocolError
from ._fields import OMIT_NONE, camel, is_u64

__all__ = ["decode_control", "decode_rpc", "encode_control", "encode_rpc"]

T = TypeVar("T")

# ---------------------------------------------------------------- strict structuring
#
# cattrs does the field-by-field work; these hooks make it strict (no "5" -> 5, no
# True -> 1, no dict iterated as a list), so a wrong type is a ProtocolError rather
# than a silently coerced value.

_converter = make_converter(detailed_validation=False)


def _strict(kind: type[Any], label: str) -> Callable[[Any, Any], Any]:
    def hook(value: Any, _: Any) -> Any:
        if type(value) is not kind:
            raise ProtocolError(f"expected {label}, got {_kind(value)}")
        return value

    return hook


_converter.register_structure_hook(int, _strict(int, "an integer"))
_converter.register_structure_hook(str, _strict(str, "a string"))
_converter.register_structure_hook(bool, _strict(bool, "a boolean"))


def _is_tuple(tp: Any) -> bool:
    return get_origin(tp) is tuple


def _tuple_hook(tp: Any) -> Callable[[Any, Any], Any]:
    (item_type, _ellipsis) = get_args(tp)

    def hook(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise ProtocolError(f"expected a list, got {_kind(value)}")
        return tuple(_converter.structure(item, item_type) for item in value)

    return hook


def _is_mapping(tp: Any) -> bool:
    return get_origin(tp) in (Mapping, dict)


def _mapping_hook(tp: Any) -> Callable[[Any, Any], Any]:
    (key_type, value_type) = get_args(tp)

    def hook(value: Any, _: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise ProtocolError(f"expected an object, got {_kind(value)}")
        return {
            _converter.structure(k, key_type): _converter.structure(v, value_type)
            for k, v in value.items()
        }

    return hook


_converter.register_structure_hook_factory(_is_tuple, _tuple_hook)
_converter.register_structure_hook_factory(_is_mapping, _mapping_hook)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---------------------------------------------------------------- records
#
# A "record" is an attrs model whose wire form is one JSON object of its fields.
# Both spellings are read; one is written (camelCase unless the class is listed in
# _SNAKE_ON_THE_WIRE, or the caller asks for snake_case).

_SNAKE_ON_THE_WIRE: Final = frozenset(
    {c.AttachBacktestSession, c.AttachParallelControlSessionV2, *e.ERROR_VARIANTS.values()}
)
#: Fields whose documented spelling is not the class's default one.
_WIRE_NAMES: Final[Mapping[tuple[type[Any], str], str]] = {
    (r.AccountDiffSubscribe, "address_type"): "address_type",
}


def _wire_key(cls: type[Any], name: str, snake_keys: bool = False) -> str:
    """The key a field is written as (and named by in error messages)."""
    if (cls, name) in _WIRE_NAMES:
        return _WIRE_NAMES[cls, name]
    return name if snake_keys or cls in _SNAKE_ON_THE_WIRE else camel(name)


@attrs.frozen
class _Record:
    cls: type[Any]
    fields: tuple[attrs.Attribute[Any], ...]
    aliases: Mapping[str, str]
    has_extra: bool


_RECORDS: dict[type[Any], _Record] = {}

#: Fields that carry slots or ``seqId``s: unsigned 64-bit integers, in both directions
#: (protocol.md §7). A negative, float, string, boolean or object value is refused.
_U64_FIELDS: Final[frozenset[tuple[type[Any], str]]] = frozenset(
    {
        (c.CreateSessionParams, "start_slot"),
        (c.CreateSessionParams, "end_slot"),
        (c.ContinueTo, "slot"),
        (c.AttachBacktestSession, "last_sequence"),
        (c.AttachParallelControlSessionV2, "last_sequences"),
        (c.SessionsCreatedV2, "start_slots"),
        (c.SessionsCreatedV2, "end_slots"),
        (c.Slot, "slot"),
        (c.Paused, "slot"),
        (c.DiscoveryBatch, "slot"),
        (r.TransactionSubscribe, "replay_from_slot"),
        (r.AccountDiffSubscribe, "replay_from_slot"),
    }
)


def _check_u64(value: Any, what: str) -> None:
    """Refuse anything but an unsigned 64-bit integer (``None`` and containers pass
    through to their items)."""
    items = value.values() if isinstance(value, Mapping) else value
    for item in items if isinstance(value, Mapping | tuple) else (value,):
        if item is not None and not is_u64(item):
            raise ProtocolError(f"{what}: expected an unsigned 64-bit integer, got {item!r:.40}")


def _record(cls: type[Any]) -> _Record:
    found = _RECORDS.get(cls)
    if found is not None:
        return found
    attrs.resolve_types(cls, globals(), vars(c) | vars(r) | vars(e))
    fields = tuple(f for f in attrs.fields(cls) if f.name != "extra")
    aliases: dict[str, str] = {}
    for f in fields:
        aliases[camel(f.name)] = f.name
        aliases[f.name] = f.name
    has_extra = any(f.name == "extra" for f in attrs.fields(cls))
    _RECORDS[cls] = found = _Record(cls, fields, aliases, has_extra)
    return found


def _structure_record(cls: type[T], value: Any, where: str) -> T:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}: expected an object, got {_kind(value)}")
    spec = _record(cls)
    found: dict[str, tuple[str, Any]] = {}
    extra: dict[str, Any] = {}
    for key, item in value.items():
        name = spec.aliases.get(key)
        if name is None:
            extra[key] = item
        elif name not in found or key == camel(name):
            found[name] = (key, item)
    kwargs: dict[str, Any] = {}
    for f in spec.fields:
        if f.name not in found:
            if f.default is attrs.NOTHING:
                raise ProtocolError(f"{where}: missing key {_wire_key(cls, f.name)!r}")
            continue
        key, item = found[f.name]
        try:
            kwargs[f.name] = _converter.structure(item, cast(Any, f.type))
            if (cls, f.name) in _U64_FIELDS:
                _check_u64(kwargs[f.name], "a slot or seqId")
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: key {key!r}: {exc}") from None
        except Exception as exc:  # cattrs' own complaints about a value's shape
            raise ProtocolError(f"{where}: key {key!r} is malformed ({exc})") from None
    if spec.has_extra:
        kwargs["extra"] = extra
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # attrs validators
        text = str(exc)
        for f in spec.fields:  # validators name the attribute; the reader knows the wire key
            text = text.replace(repr(f.name), repr(_wire_key(cls, f.name)))
        raise ProtocolError(f"{where}: {text}") from None


def _unstructure_record(obj: Any, *, snake_keys: bool = False) -> dict[str, Any]:
    spec = _record(type(obj))
    out: dict[str, Any] = {}
    for f in spec.fields:
        item = getattr(obj, f.name)
        if item is None and f.metadata.get(OMIT_NONE):
            continue
        out[_wire_key(spec.cls, f.name, snake_keys)] = _converter.unstructure(item)
    if spec.has_extra:
        for key, item in obj.extra.items():
            out.setdefault(key, item)
    return out


for _nested in (c.Discovery, c.ContinueParams):
    _converter.register_structure_hook(
        _nested,
        functools.partial(lambda cls, v, _: _structure_record(cls, v, cls.__name__), _nested),
    )
    _converter.register_unstructure_hook(_nested, _unstructure_record)


def _structure_account(value: Any, _: Any) -> c.AccountData:
    if not isinstance(value, dict):
        raise ProtocolError(f"expected an object, got {_kind(value)}")
    data = value.get("data")
    if isinstance(data, dict):
        flat = {**value, "data": data.get("data"), "encoding": data.get("encoding", "base64")}
    elif isinstance(data, list) and len(data) == 2:  # the UiAccount spelling
        flat = {**value, "data": data[0], "encoding": data[1]}
    else:
        raise ProtocolError("key 'data' must be {'data': str, 'encoding': str}")
    return _structure_record(c.AccountData, flat, "AccountData")


def _unstructure_account(acc: c.AccountData) -> dict[str, Any]:
    return {
        "data": {"data": acc.data, "encoding": acc.encoding},
        "executable": acc.executable,
        "lamports": acc.lamports,
        "owner": acc.owner,
        "space": acc.space,
    }


_converter.register_structure_hook(c.AccountData, _structure_account)
_converter.register_unstructure_hook(c.AccountData, _unstructure_account)

# ---------------------------------------------------------------- BacktestError


def _decode_backtest_error(value: Any) -> e.BacktestError:
    if isinstance(value, str):
        name, fields = value, None
    elif isinstance(value, dict) and isinstance(value.get("code"), str):
        name = value["code"]
        fields = {k: v for k, v in value.items() if k != "code"}
    elif isinstance(value, dict) and len(value) == 1:
        ((name, fields),) = value.items()
    else:
        raise ProtocolError(f"expected a variant name or a one-key object, got {value!r:.80}")
    cls = e.ERROR_VARIANTS.get(name) or e.ERROR_VARIANTS.get(name[:1].upper() + name[1:])
    if cls is None:
        return e.UnknownBacktestError(name, fields)
    return _structure_record(cls, fields, f"error.{cls.name}")


def _encode_backtest_error(error: e.BacktestError) -> Any:
    if isinstance(error, e.UnknownBacktestError):
        return error.variant if error.fields is None else {error.variant: error.fields}
    fields = _unstructure_record(error)
    return error.name if not fields else {error.name: fields}


_converter.register_structure_hook(e.BacktestError, lambda v, _: _decode_backtest_error(v))

# ---------------------------------------------------------------- control envelope

_NO_PARAMS: Final = (
    c.ReadyForContinue,
    c.CloseBacktestSession,
    c.ResumeAttachedSession,
    c.Success,
)
_PLAIN_RECORDS: Final = (
    c.ContinueTo,
    c.AttachBacktestSession,
    c.ContinueSessionV1,
    c.CloseSessionV1,
    c.AttachParallelControlSessionV2,
    c.SessionCreated,
    c.SessionAttached,
    c.SessionsCreatedV2,
    c.ParallelSessionAttachedV2,
    c.Status,
    c.Paused,
    c.Completed,
)


def _decode_create(params: Any, method: str) -> c.CreateBacktestSession:
    if isinstance(params, dict) and "parallel" in params:
        parallel = params["parallel"]
        if type(parallel) is not bool:
            raise ProtocolError(f"{method}: key 'parallel' must be a boolean")
        params = {k: v for k, v in params.items() if k != "parallel"}
        return c.CreateBacktestSession(
            _structure_record(c.CreateSessionParams, params, method), parallel
        )
    return c.CreateBacktestSession(_structure_record(c.CreateSessionParams, params, method))


def _decode_slot(params: Any, method: str) -> c.Slot:
    # The bare slot only: an object (``{"slot": 5}``) breaks the protocol (§2.2, §7).
    if not is_u64(params):
        raise ProtocolError(
            f"{method}: params must be a slot (an unsigned 64-bit integer), "
            f"got {_kind(params)} {params!r:.40}"
        )
    return c.Slot(params)


def _decode_continue_to_v1(params: Any, method: str) -> c.ContinueToSessionV1:
    if not isinstance(params, dict):
        raise ProtocolError(f"{method}: expected an object, got {_kind(params)}")
    inner = params.get("params")
    target = _structure_record(c.ContinueTo, inner, f"{method}.params")
    outer = {k: v for k, v in params.items() if k != "params"}
    head = _structure_record(c.CloseSessionV1, outer, method)
    return c.ContinueToSessionV1(head.session_id, target.slot, target.batch_index, extra=head.extra)


_EVENT_METHODS: Final = frozenset(
    cls.method
    for cls in (
        c.ReadyForContinue,
        c.Slot,
        c.Status,
        c.Paused,
        c.DiscoveryBatch,
        c.Completed,
        c.Success,
        c.ServerError,
    )
)


def _decode_event_v2(params: Any, method: str) -> c.SessionEventV2:
    if not isinstance(params, dict):
        raise ProtocolError(f"{method}: expected an object, got {_kind(params)}")
    session_id = params.get("sessionId", params.get("session_id"))
    seq_id = params.get("seqId", params.get("seq_id"))
    event = params.get("event")
    if type(session_id) is not str:
        raise ProtocolError(f"{method}: key 'sessionId' must be a string, got {_kind(session_id)}")
    if not is_u64(seq_id):
        raise ProtocolError(
            f"{method}: key 'seqId' must be an unsigned 64-bit integer, got {_kind(seq_id)}"
        )
    if not isinstance(event, dict):
        raise ProtocolError(f"{method}: key 'event' must be an object, got {_kind(event)}")
    inner: c.ServerEvent
    if isinstance(event.get("method"), str) and event["method"] not in _EVENT_METHODS:
        # Only session events travel wrapped; anything else is kept raw, not misread.
        inner = c.UnknownMessage(event["method"], event)
    else:
        try:
            inner = _decode_envelope(event, f"{method}.event")
        except ProtocolError as exc:
            raise ProtocolError(f"{method}.event: {exc}", method=method) from None
    known = {"sessionId", "session_id", "seqId", "seq_id", "event"}
    extra = {k: v for k, v in params.items() if k not in known}
    return c.SessionEventV2(session_id, seq_id, inner, extra=extra)


def _encoded_binary(item: Any, index: int) -> str:
    """One ``discoveryBatch`` transaction as base64: an ``EncodedBinary`` or a bare string."""
    if type(item) is str:
        return item
    if not isinstance(item, dict):
        raise ProtocolError(
            f"transaction {index} must be {{'data', 'encoding'}} or a string, got {_kind(item)}"
        )
    data, encoding = item.get("data"), item.get("encoding", "base64")
    if type(data) is not str or type(encoding) is not str:
        raise ProtocolError(f"transaction {index}: 'data' and 'encoding' must be strings")
    if encoding == "base64":
        return data
    if encoding == "base58":
        try:
            return base64.b64encode(base58_decode(data)).decode("ascii")
        except ValueError as exc:
            raise ProtocolError(f"transaction {index}: {exc}") from None
    raise ProtocolError(f"transaction {index}: unsupported encoding {encoding!r:.40}")


def _decode_discovery_batch(params: Any, method: str) -> c.DiscoveryBatch:
    if isinstance(params, dict) and isinstance(params.get("transactions"), list):
        try:
            normalized = [_encoded_binary(t, i) for i, t in enumerate(params["transactions"])]
        except ProtocolError as exc:
            raise ProtocolError(f"{method}: key 'transactions': {exc}") from None
        params = {**params, "transactions": normalized}
    return _structure_record(c.DiscoveryBatch, params, method)


def _decode_error(params: Any, method: str) -> c.ServerError:
    try:
        return c.ServerError(_decode_backtest_error(params))
    except ProtocolError as exc:
        raise ProtocolError(f"{method}: {exc}", method=method) from None


_Decoder = Callable[[Any, str], Any]


def _record_decoder(cls: type[Any]) -> _Decoder:
    return lambda params, method: _structure_record(cls, params, method)


def _no_params_decoder(cls: type[Any]) -> _Decoder:
    return lambda params, method: cls()


_CONTROL_DECODERS: Final[Mapping[str, _Decoder]] = {
    **{cls.method: _no_params_decoder(cls) for cls in _NO_PARAMS},
    **{cls.method: _record_decoder(cls) for cls in _PLAIN_RECORDS},
    c.CreateBacktestSession.method: _decode_create,
    c.DiscoveryBatch.method: _decode_discovery_batch,
    c.Continue.method: lambda p, m: c.Continue(_structure_record(c.ContinueParams, p, m)),
    c.ContinueToSessionV1.method: _decode_continue_to_v1,
    c.Slot.method: _decode_slot,
    c.ServerError.method: _decode_error,
    c.SessionEventV2.method: _decode_event_v2,
}


def _load(data: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:  # also what orjson raises for a wrong input type
        raise ProtocolError(f"{what}: not valid JSON ({exc})") from None


def _decode_envelope(obj: dict[str, Any], where: str) -> Any:
    method = obj.get("method")
    if type(method) is not str:
        raise ProtocolError(f"{where}: key 'method' must be a string, got {_kind(method)}")
    decoder = _CONTROL_DECODERS.get(method)
    if decoder is None:
        return c.UnknownMessage(method, obj)
    try:
        return decoder(obj.get("params"), method)
    except ProtocolError as exc:
        exc.method = exc.method or method
        raise
    except Exception as exc:  # a defensive net: decoders raise ProtocolError only
        raise ProtocolError(f"{method}: malformed message ({exc!r:.200})", method=method) from None


def decode_control(data: str | bytes) -> c.Sequenced[c.ControlMessage]:
    """Decode one control-socket frame (either direction).

    Returns:
        The message with its top-level ``seqId`` (``None`` when absent).

    Raises:
        ProtocolError: the frame breaks protocol.md; nothing else is ever raised.
    """
    obj = _load(data, "control message")
    if not isinstance(obj, dict):
        raise ProtocolError(f"control message: expected a JSON object, got {_kind(obj)}")
    seq_id = obj.get("seqId", obj.get("seq_id"))
    if seq_id is not None and not is_u64(seq_id):
        raise ProtocolError(
            f"control message: key 'seqId' must be an unsigned 64-bit integer, "
            f"got {_kind(seq_id)} {seq_id!r:.40}"
        )
    return c.Sequenced(seq_id, _decode_envelope(obj, "control message"))


def _encode_params(message: Any, snake_keys: bool) -> tuple[bool, Any]:
    """The ``params`` of ``message``: (present, value)."""
    if isinstance(message, _NO_PARAMS):
        return False, None
    if isinstance(message, c.CreateBacktestSession):
        params = _unstructure_record(message.params)
        if message.parallel:
            params["parallel"] = True
        return True, params
    if isinstance(message, c.Continue):
        return True, _unstructure_record(message.params)
    if isinstance(message, c.Slot):
        return True, message.slot
    if isinstance(message, c.ServerError):
        return True, _encode_backtest_error(message.error)
    if isinstance(message, c.ContinueToSessionV1):
        out: dict[str, Any] = {
            "sessionId": message.session_id,
            "params": {"slot": message.slot, "batchIndex": message.batch_index},
        }
        return True, {**message.extra, **out}
    if isinstance(message, c.SessionEventV2):
        inner = _envelope(message.event, snake_keys)
        keys = ("session_id", "seq_id") if snake_keys else ("sessionId", "seqId")
        out = {keys[0]: message.session_id, keys[1]: message.seq_id, "event": inner}
        return True, {**message.extra, **out}
    if isinstance(message, c.DiscoveryBatch):
        # The reference crate's shape: each transaction an EncodedBinary object.
        fields = _unstructure_record(message, snake_keys=snake_keys)
        fields["transactions"] = [{"data": t, "encoding": "base64"} for t in message.transactions]
        return True, fields
    if isinstance(message, _PLAIN_RECORDS):
        return True, _unstructure_record(message, snake_keys=snake_keys)
    raise TypeError(f"not a control message: {type(message).__name__}")


def _envelope(message: Any, snake_keys: bool) -> dict[str, Any]:
    if isinstance(message, c.UnknownMessage):
        return dict(message.raw)
    present, params = _encode_params(message, snake_keys)
    out: dict[str, Any] = {"method": message.method}
    if present:
        out["params"] = params
    return out


def encode_control(
    message: c.ControlMessage | c.Sequenced[Any], *, snake_case: bool = False
) -> str:
    """Encode one control message as a JSON text frame.

    Args:
        message: A control model, or a ``Sequenced`` to include its ``seqId``.
        snake_case: Spell the message's own keys snake_case (``sessionId`` ->
            ``session_id``); the local server uses this to prove clients read both.

    Raises:
        TypeError: ``message`` is not a control model.
    """
    seq_id: int | None = None
    if isinstance(message, c.Sequenced):
        seq_id, message = message.seq_id, message.message
    out = _envelope(message, snake_case)
    if seq_id is not None:
        out["seq_id" if snake_case else "seqId"] = seq_id
    return orjson.dumps(out).decode()


# ---------------------------------------------------------------- data plane

_JSONRPC: Final = {"jsonrpc": "2.0"}


def _decode_subscribe(cls: type[T], obj: dict[str, Any], method: str) -> T:
    params = obj.get("params")
    if not isinstance(params, list) or not 1 <= len(params) <= 2:
        raise ProtocolError(f"{method}: params must be [address, config]")
    address = params[0]
    if type(address) is not str:
        raise ProtocolError(f"{method}: the address must be a string, got {_kind(address)}")
    config = params[1] if len(params) == 2 else None
    first = "program_id" if cls is r.TransactionSubscribe else "address"
    # The address goes in under the camelCase key, which wins over a config key that
    # merely aliases the same field (``programId`` in the config must not replace it).
    record = {
        **(config if isinstance(config, dict) else {}),
        "id": obj["id"],
        camel(first): address,
    }
    if config is not None and not isinstance(config, dict):
        raise ProtocolError(f"{method}: the config must be an object, got {_kind(config)}")
    return _structure_record(cls, record, method)


def _decode_unsubscribe(cls: type[T], obj: dict[str, Any], method: str) -> T:
    params = obj.get("params")
    if not isinstance(params, list) or len(params) != 1:
        raise ProtocolError(f"{method}: params must be [subscription id]")
    return _structure_record(cls, {"id": obj["id"], "subscription": params[0]}, method)


_RPC_REQUESTS: Final[Mapping[str, Callable[[dict[str, Any], str], Any]]] = {
    r.TransactionSubscribe.method: functools.partial(_decode_subscribe, r.TransactionSubscribe),
    r.AccountDiffSubscribe.method: functools.partial(_decode_subscribe, r.AccountDiffSubscribe),
    r.TransactionUnsubscribe.method: functools.partial(
        _decode_unsubscribe, r.TransactionUnsubscribe
    ),
    r.AccountDiffUnsubscribe.method: functools.partial(
        _decode_unsubscribe, r.AccountDiffUnsubscribe
    ),
}
_NOTIFICATIONS: Final[Mapping[str, tuple[type[Any], Callable[[Any], Any]]]] = {
    r.TRANSACTION_NOTIFICATION: (r.TransactionNotification, r.TransactionPayload.from_raw),
    r.ACCOUNT_DIFF_NOTIFICATION: (r.AccountDiffNotification, r.AccountDiffPayload.from_raw),
}


def _rpc_id(obj: dict[str, Any]) -> int | str | None:
    value = obj.get("id")
    if value is None or type(value) in (int, str):
        return cast("int | str | None", value)
    raise ProtocolError(
        f"rpc message: key 'id' must be an integer, a string or null, got {_kind(value)}"
    )


def _decode_rpc_object(obj: dict[str, Any]) -> r.RpcMessage:
    method = obj.get("method")
    if method is not None:
        if type(method) is not str:
            raise ProtocolError(f"rpc message: key 'method' must be a string, got {_kind(method)}")
        if "id" in obj:
            rpc_id = _rpc_id(obj)
            request = _RPC_REQUESTS.get(method)
            if request is None:
                return c.UnknownMessage(method, obj)
            try:
                return cast(r.RpcMessage, request(obj, method))
            except ProtocolError as exc:
                exc.method, exc.rpc_id = method, rpc_id
                raise
        found = _NOTIFICATIONS.get(method)
        if found is None:
            return c.UnknownMessage(method, obj)
        cls, payload = found
        params = obj.get("params")
        if not isinstance(params, dict):
            raise ProtocolError(
                f"{method}: params must be an object, got {_kind(params)}", method=method
            )
        subscription = params.get("subscription")
        if type(subscription) is not int:
            raise ProtocolError(f"{method}: key 'subscription' must be an integer", method=method)
        try:
            result = payload(params.get("result"))
        except ProtocolError as exc:
            exc.method = method
            raise
        return cast(r.RpcMessage, cls(subscription, result))
    rpc_id = _rpc_id(obj)
    if "error" in obj:
        err = obj["error"]
        if not isinstance(err, dict):
            raise ProtocolError(f"rpc error: key 'error' must be an object, got {_kind(err)}")
        code, message = err.get("code"), err.get("message", "")
        if type(code) is not int:
            raise ProtocolError(f"rpc error: key 'code' must be an integer, got {_kind(code)}")
        if type(message) is not str:
            raise ProtocolError(f"rpc error: key 'message' must be a string, got {_kind(message)}")
        return r.RpcError(rpc_id, code, message, err.get("data"))
    if "result" in obj:
        return r.RpcResult(rpc_id, obj["result"])
    raise ProtocolError("rpc message: expected 'method', 'result' or 'error'")


def decode_rpc(data: str | bytes) -> r.RpcMessage:
    """Decode one data-plane frame (either direction).

    Raises:
        ProtocolError: the frame breaks protocol.md (``rpc_id`` set when a request's id
            could be read); nothing else is ever raised.
    """
    obj = _load(data, "rpc message")
    if not isinstance(obj, dict):
        raise ProtocolError(f"rpc message: expected a JSON object, got {_kind(obj)}")
    try:
        return _decode_rpc_object(obj)
    except ProtocolError:
        raise
    except Exception as exc:  # a defensive net: decoders raise ProtocolError only
        raise ProtocolError(f"rpc message: malformed ({exc!r:.200})") from None


def _subscribe_params(message: r.TransactionSubscribe | r.AccountDiffSubscribe) -> list[Any]:
    config = _unstructure_record(message)
    del config["id"]
    address = config.pop("programId" if isinstance(message, r.TransactionSubscribe) else "address")
    return [address, config]


def encode_rpc(message: r.RpcMessage) -> str:
    """Encode one data-plane message as a JSON text frame.

    Raises:
        TypeError: ``message`` is not a data-plane model.
    """
    out: dict[str, Any]
    if isinstance(message, r.TransactionNotification | r.AccountDiffNotification):
        out = {
            **_JSONRPC,
            "method": message.method,
            "params": {"subscription": message.subscription, "result": message.result.raw},
        }
    elif isinstance(message, r.TransactionSubscribe | r.AccountDiffSubscribe):
        out = {**_JSONRPC, "id": message.id, "method": message.method}
        out["params"] = _subscribe_params(message)
    elif isinstance(message, r.TransactionUnsubscribe | r.AccountDiffUnsubscribe):
        out = {**_JSONRPC, "id": message.id, "method": message.method}
        out["params"] = [message.subscription]
    elif isinstance(message, r.RpcResult):
        out = {**_JSONRPC, "id": message.id, "result": message.result}
    elif isinstance(message, r.RpcError):
        error: dict[str, Any] = {"code": message.code, "message": message.message}
        if message.data is not None:
            error["data"] = message.data
        out = {**_JSONRPC, "id": message.id, "error": error}
    elif isinstance(message, c.UnknownMessage):
        out = dict(message.raw)
    else:
        raise TypeError(f"not a data-plane message: {type(message).__name__}")
    return orjson.dumps(out).decode()


def decode_account_data(value: Any) -> c.AccountData:
    """Decode one ``AccountData`` JSON value (protocol.md §2.1; the ``UiAccount`` data
    spelling ``[data, encoding]`` is accepted too).

    Raises:
        ProtocolError: ``value`` is not an ``AccountData``.
    """
    try:
        return _converter.structure(value, c.AccountData)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"AccountData: {exc}") from None
