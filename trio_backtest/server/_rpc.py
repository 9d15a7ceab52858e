"""JSON-RPC over HTTP on a session's data-plane path (protocol.md §6), sans I/O.

:func:`answer_rpc` turns one request body into one response body, answered from the
session's runtime at its current position. Every malformed request gets a JSON-RPC error
(``-32700`` parse, ``-32600`` invalid request, ``-32601`` unknown method, ``-32602`` bad
params, ``-32002`` preflight failure); nothing here raises for a client's input.

``sendTransaction`` validates and preflights at once (simulating against the current
state, unless ``skipPreflight``), returns the signature and queues the transaction to run in
the current slot after the block's transactions. It is idempotent by signature: a resend of
a queued or executed signature returns that signature and runs nothing. Until it ran,
``getSignatureStatuses`` answers ``null`` for it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import orjson
from solders.account import Account
from solders.message import from_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from ..protocol import INVALID_PARAMS, METHOD_NOT_FOUND, PARSE_ERROR, ProtocolError
from ..protocol.codec import decode_account_data
from ._ledger import base58_decode
from ._runtime import account_from_data, ui_account
from ._session import Session

__all__ = ["INVALID_REQUEST", "PREFLIGHT_FAILURE", "answer_rpc", "method_of"]

INVALID_REQUEST: Final = -32600
PREFLIGHT_FAILURE: Final = -32002
_API_VERSION: Final = "2.2.0"
_MAX_BATCH: Final = 256
_MAX_KEYS: Final = 100
"""Most addresses ``getMultipleAccounts`` and signatures ``getSignatureStatuses`` take."""
_BLOCKHASH_VALIDITY: Final = 150


@final
class _Invalid(Exception):
    """A request the server answers with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _params_error(message: str) -> _Invalid:
    return _Invalid(INVALID_PARAMS, f"Invalid params: {message}")


def method_of(body: bytes) -> str | None:
    """The ``method`` of a single request body, for the server's record (never raises)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(request, dict) and isinstance(request.get("method"), str):
        return str(request["method"])[:100]
    return None


def answer_rpc(session: Session, body: bytes) -> bytes:
    """The JSON response to one HTTP JSON-RPC body (a request or a batch of them)."""
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return orjson.dumps(_error(None, PARSE_ERROR, "Parse error"))
    if isinstance(request, list):
        if not request or len(request) > _MAX_BATCH:
            return orjson.dumps(_error(None, INVALID_REQUEST, "Invalid request: batch size"))
        return orjson.dumps([_answer_one(session, item) for item in request])
    return orjson.dumps(_answer_one(session, request))


def _error(rpc_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": rpc_id}


def _answer_one(session: Session, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return _error(None, INVALID_REQUEST, "Invalid request")
    rpc_id = request.get("id")
    if rpc_id is not None and type(rpc_id) not in (int, str):
        return _error(None, INVALID_REQUEST, "Invalid request: id")
    method = request.get("method")
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return _error(rpc_id, INVALID_REQUEST, "Invalid request")
    handler = _METHODS.get(method)
    if handler is None:
        return _error(rpc_id, METHOD_NOT_FOUND, f"Method not found: {method[:100]}")
    params = request.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list | dict):
        return _error(rpc_id, INVALID_PARAMS, "Invalid params: not an array")
    try:
        result = handler(session, params)
    except _Invalid as exc:
        return _error(rpc_id, exc.code, exc.message, exc.data)
    return {"jsonrpc": "2.0", "result": result, "id": rpc_id}


# ---------------------------------------------------------------- argument helpers


def _arg(params: list[Any] | dict[str, Any], index: int, name: str) -> Any:
    if not isinstance(params, list):
        raise _params_error("expected an array")
    if len(params) <= index:
        raise _params_error(f"missing {name}")
    return params[index]


def _config(params: list[Any] | dict[str, Any], index: int) -> Mapping[str, Any]:
    if not isinstance(params, list) or len(params) <= index or params[index] is None:
        return {}
    config = params[index]
    if not isinstance(config, dict):
        raise _params_error("the configuration must be an object")
    return config


def _pubkey(value: Any) -> Pubkey:
    if not isinstance(value, str):
        raise _params_error("an address must be a base58 string")
    try:
        raw = base58_decode(value)
    except ValueError:
        raise _params_error(f"invalid address {value[:64]!r}") from None
    if len(raw) != 32:
        raise _params_error(f"invalid address {value[:64]!r}")
    return Pubkey(raw)


def _signature(value: Any) -> str:
    if not isinstance(value, str):
        raise _params_error("a signature must be a base58 string")
    try:
        raw = base58_decode(value)
    except ValueError:
        raw = b""
    if len(raw) != 64:
        raise _params_error(f"invalid signature {value[:100]!r}")
    return str(Signature(raw))


def _binary(value: Any, encoding: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _params_error(f"{what} must be a string")
    try:
        if encoding == "base64":
            return base64.b64decode(value, validate=True)
        if encoding in (None, "base58"):
            return base58_decode(value)
    except (binascii.Error, ValueError):
        raise _params_error(f"{what} is not valid {encoding or 'base58'}") from None
    raise _params_error(f"unsupported encoding {str(encoding)[:20]!r}")


def _decode_transaction(raw: bytes) -> VersionedTransaction | None:
    try:
        return VersionedTransaction.from_bytes(raw)
    except Exception:  # solders raises its own error types
        return None


def _transaction(params: list[Any] | dict[str, Any]) -> VersionedTransaction:
    config = _config(params, 1)
    value = _arg(params, 0, "transaction")
    encoding = config.get("encoding")
    transaction: VersionedTransaction | None = None
    if encoding is None:
        # Solana's default is base58, but common clients (solders' request builders among
        # them) send base64 without saying so: without an explicit encoding, accept both.
        for guess in ("base64", "base58"):
            with contextlib.suppress(_Invalid):
                transaction = _decode_transaction(_binary(value, guess, "the transaction"))
            if transaction is not None:
                break
    else:
        transaction = _decode_transaction(_binary(value, encoding, "the transaction"))
    if transaction is None:
        raise _params_error("failed to deserialize the transaction")
    if not transaction.signatures:
        raise _params_error("the transaction has no signature")
    return transaction


def _account_encoding(config: Mapping[str, Any]) -> None:
    # Binary account data is served base64 (what every client asks for); base58 is
    # deprecated for account data and jsonParsed needs program parsers this server lacks.
    encoding = config.get("encoding", "base64")
    if encoding != "base64":
        raise _params_error(f"unsupported encoding {str(encoding)[:20]!r}: use base64")


def _context(session: Session) -> dict[str, Any]:
    return {"slot": session.position, "apiVersion": _API_VERSION}


def _ui(account: Account | None) -> dict[str, Any] | None:
    return None if account is None else ui_account(account)


def _read(session: Session, key: Pubkey) -> Account | None:
    return session.chain.account(session.position, session.tx_index, key)


# ---------------------------------------------------------------- methods


def _get_account_info(session: Session, params: Any) -> Any:
    key = _pubkey(_arg(params, 0, "address"))
    _account_encoding(_config(params, 1))
    return {"context": _context(session), "value": _ui(_read(session, key))}


def _get_multiple_accounts(session: Session, params: Any) -> Any:
    addresses = _arg(params, 0, "addresses")
    if not isinstance(addresses, list) or len(addresses) > _MAX_KEYS:
        raise _params_error(f"addresses must be an array of at most {_MAX_KEYS}")
    keys = [_pubkey(address) for address in addresses]
    _account_encoding(_config(params, 1))
    return {"context": _context(session), "value": [_ui(_read(session, key)) for key in keys]}


def _get_balance(session: Session, params: Any) -> Any:
    account = _read(session, _pubkey(_arg(params, 0, "address")))
    return {"context": _context(session), "value": 0 if account is None else account.lamports}


def _filter(account: Account, rule: Any) -> bool:
    if not isinstance(rule, dict) or len(rule) != 1:
        raise _params_error("a filter is {'dataSize': n} or {'memcmp': {...}}")
    if "dataSize" in rule:
        size = rule["dataSize"]
        if type(size) is not int:
            raise _params_error("dataSize must be an integer")
        return len(account.data) == size
    memcmp = rule.get("memcmp")
    if not isinstance(memcmp, dict) or type(memcmp.get("offset")) is not int:
        raise _params_error("memcmp needs an integer offset and bytes")
    raw = memcmp.get("bytes")
    if memcmp.get("encoding") == "bytes":
        # solders spells memcmp bytes as an array of integers.
        if not isinstance(raw, list) or not all(type(b) is int and 0 <= b < 256 for b in raw):
            raise _params_error("memcmp bytes must be integers 0-255")
        wanted = bytes(raw)
    else:
        wanted = _binary(raw, memcmp.get("encoding"), "memcmp bytes")
    offset = memcmp["offset"]
    return account.data[offset : offset + len(wanted)] == wanted


def _get_program_accounts(session: Session, params: Any) -> Any:
    program = _pubkey(_arg(params, 0, "program id"))
    config = _config(params, 1)
    _account_encoding(config)
    filters = config.get("filters") or []
    if not isinstance(filters, list):
        raise _params_error("filters must be an array")
    found = session.chain.program_accounts(session.position, session.tx_index, program)
    value = [
        {"pubkey": str(key), "account": ui_account(account)}
        for key, account in sorted(found, key=lambda item: bytes(item[0]))
        if all(_filter(account, rule) for rule in filters)
    ]
    if config.get("withContext"):
        return {"context": _context(session), "value": value}
    return value


def _get_latest_blockhash(session: Session, params: Any) -> Any:
    ledger_slot = session.core.ledger.slot(session.position)
    return {
        "context": _context(session),
        "value": {
            "blockhash": ledger_slot.blockhash,
            "lastValidBlockHeight": session.position + _BLOCKHASH_VALIDITY,
        },
    }


def _get_slot(session: Session, params: Any) -> Any:
    return session.position


def _get_transaction(session: Session, params: Any) -> Any:
    signature = _signature(_arg(params, 0, "signature"))
    config = _config(params, 1)
    encoding = config.get("encoding", "json")
    if encoding not in ("json", "base64"):
        raise _params_error(f"unsupported encoding {str(encoding)[:20]!r}")
    executed = session.find_transaction(signature)
    if executed is None:
        return None
    if encoding == "json":
        return executed.raw
    raw = executed.raw
    wire = base64.b64encode(bytes(executed.transaction)).decode("ascii")
    return {**raw, "transaction": [wire, "base64"]}


def _get_signature_statuses(session: Session, params: Any) -> Any:
    signatures = _arg(params, 0, "signatures")
    if not isinstance(signatures, list) or len(signatures) > _MAX_KEYS:
        raise _params_error(f"signatures must be an array of at most {_MAX_KEYS}")
    statuses: list[Any] = []
    for value in signatures:
        executed = session.find_transaction(_signature(value))
        statuses.append(None if executed is None else executed.status())
    return {"context": _context(session), "value": statuses}


def _simulate_transaction(session: Session, params: Any) -> Any:
    transaction = _transaction(params)
    simulation = session.chain.simulate(session.position, session.tx_index, transaction)
    return {"context": _context(session), "value": simulation.value}


def _send_transaction(session: Session, params: Any) -> Any:
    transaction = _transaction(params)
    signature = str(transaction.signatures[0])
    chain = session.chain
    if chain.queued(signature) or chain.sent(signature) is not None:
        return signature
    if not _config(params, 1).get("skipPreflight", False):
        simulation = chain.simulate(session.position, session.tx_index, transaction)
        if simulation.err is not None:
            raise _Invalid(
                PREFLIGHT_FAILURE,
                f"Transaction simulation failed: {simulation.value['err']}",
                simulation.value,
            )
    return chain.enqueue(session.position, session.tx_index, transaction)


def _get_fee_for_message(session: Session, params: Any) -> Any:
    config = _config(params, 1)
    raw = _binary(_arg(params, 0, "message"), config.get("encoding", "base64"), "the message")
    try:
        message = from_bytes_versioned(raw)
    except Exception:  # solders raises its own error types
        raise _params_error("failed to deserialize the message") from None
    signers = message.header.num_required_signatures
    transaction = VersionedTransaction.populate(message, [Signature.default()] * signers)
    fee = session.chain.fee_for(session.position, session.tx_index, transaction)
    return {"context": _context(session), "value": fee}


def _modify_accounts(session: Session, params: Any) -> Any:
    changes = params[0] if isinstance(params, list) and len(params) == 1 else params
    if not isinstance(changes, dict) or not changes:
        raise _params_error("expected [{address: AccountData}]")
    accounts: dict[Pubkey, Account | None] = {}
    for address, value in changes.items():
        key = _pubkey(address)
        try:
            data = decode_account_data(value)
        except ProtocolError as exc:
            raise _params_error(f"{address[:64]}: {str(exc)[:200]}") from None
        if data.encoding != "base64":
            raise _params_error(f"{address[:64]}: only base64 account data is supported")
        _pubkey(data.owner)
        try:
            accounts[key] = account_from_data(data)
        except (binascii.Error, ValueError) as exc:
            raise _params_error(f"{address[:64]}: {str(exc)[:200]}") from None
    session.chain.modify(session.position, session.tx_index, accounts)
    return None


_METHODS: Final[dict[str, Callable[[Session, Any], Any]]] = {
    "getAccountInfo": _get_account_info,
    "getMultipleAccounts": _get_multiple_accounts,
    "getBalance": _get_balance,
    "getProgramAccounts": _get_program_accounts,
    "getLatestBlockhash": _get_latest_blockhash,
    "getSlot": _get_slot,
    "getTransaction": _get_transaction,
    "getSignatureStatuses": _get_signature_statuses,
    "simulateTransaction": _simulate_transaction,
    "sendTransaction": _send_transaction,
    "getFeeForMessage": _get_fee_for_message,
    "modifyAccounts": _modify_accounts,
}
