"""Models of the data plane: JSON-RPC 2.0, Solana PubSub style (protocol.md §5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, final

import attrs

from ._control import UnknownMessage
from ._errors import ProtocolError
from ._fields import extra_field, is_u64, omitted_if_none

__all__ = [
    "ACCOUNT_DIFF_NOTIFICATION",
    "AccountDiffNotification",
    "AccountDiffPayload",
    "AccountDiffSubscribe",
    "AccountDiffUnsubscribe",
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "REPLAY_WINDOW_EXCEEDED",
    "RpcError",
    "RpcMessage",
    "RpcResult",
    "TRANSACTION_NOTIFICATION",
    "TransactionNotification",
    "TransactionPayload",
    "TransactionSubscribe",
    "TransactionUnsubscribe",
]

PARSE_ERROR = -32700
"""JSON-RPC error code: the frame was not valid JSON."""
METHOD_NOT_FOUND = -32601
"""JSON-RPC error code: the data plane has no such method."""
INVALID_PARAMS = -32602
"""JSON-RPC error code: the method's params were unacceptable."""
REPLAY_WINDOW_EXCEEDED = -32010
"""JSON-RPC error code: ``replayFromSlot`` is older than the server keeps; see
``RpcError.oldest_slot``."""

TRANSACTION_NOTIFICATION = "transactionNotification"
ACCOUNT_DIFF_NOTIFICATION = "accountDiffNotification"


@final
@attrs.frozen
class TransactionSubscribe:
    """Subscribe to every executed transaction that mentions ``program_id``."""

    method: ClassVar[str] = "transactionSubscribe"
    id: int
    program_id: str
    replay_from_slot: int | None = omitted_if_none()
    """Resend everything from this slot on (inclusive), then go live."""
    compression: str | None = omitted_if_none()
    """``"zstd"`` for compressed binary frames; ``None`` for plain text."""
    extra: Mapping[str, Any] = extra_field()
    """Unknown config keys, kept."""


@final
@attrs.frozen
class AccountDiffSubscribe:
    """Subscribe to the changes of one account, or of every account a program owns."""

    method: ClassVar[str] = "accountDiffSubscribe"
    id: int
    address: str
    address_type: str | None = omitted_if_none()
    """``"program"`` or ``"account"`` (the server's default)."""
    replay_from_slot: int | None = omitted_if_none()
    compression: str | None = omitted_if_none()
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class TransactionUnsubscribe:
    """Stop a transaction subscription."""

    method: ClassVar[str] = "transactionUnsubscribe"
    id: int
    subscription: int


@final
@attrs.frozen
class AccountDiffUnsubscribe:
    """Stop an account-diff subscription."""

    method: ClassVar[str] = "accountDiffUnsubscribe"
    id: int
    subscription: int


@final
@attrs.frozen
class RpcResult:
    """A successful answer: a subscription id for a subscribe, ``True`` for an unsubscribe."""

    id: int | str | None
    result: Any


@final
@attrs.frozen
class RpcError:
    """A JSON-RPC error answer."""

    id: int | str | None
    code: int
    message: str
    data: Any = None

    @property
    def oldest_slot(self) -> int | None:
        """For ``-32010``: the oldest slot the server can still replay."""
        if self.code == REPLAY_WINDOW_EXCEEDED and isinstance(self.data, Mapping):
            value = self.data.get("oldestSlot", self.data.get("oldest_slot"))
            if is_u64(value):
                return value
        return None


def _require_slot(raw: Mapping[str, Any], key: str, where: str) -> int:
    value = raw.get(key)
    if is_u64(value):
        return value
    raise ProtocolError(
        f"{where}: key {key!r} must be a slot (an unsigned 64-bit integer), "
        f"got {_kind(value)} {value!r:.40}"
    )


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


@final
@attrs.frozen
class TransactionPayload:
    """A view over one executed transaction in ``getTransaction`` shape."""

    slot: int
    signature: str
    """``transaction.signatures[0]``: the transaction's identity."""
    raw: Mapping[str, Any] = attrs.field(repr=False)
    """The payload exactly as received."""

    @classmethod
    def from_raw(cls, raw: Any) -> TransactionPayload:
        """Validate ``raw`` and build the view.

        Raises:
            ProtocolError: ``slot`` or ``transaction.signatures[0]`` missing or mistyped.
        """
        where = TRANSACTION_NOTIFICATION
        if not isinstance(raw, dict):
            raise ProtocolError(f"{where}: result must be an object, got {_kind(raw)}")
        slot = _require_slot(raw, "slot", where)
        tx = raw.get("transaction")
        signatures = tx.get("signatures") if isinstance(tx, dict) else None
        if not isinstance(signatures, list) or not signatures or type(signatures[0]) is not str:
            raise ProtocolError(f"{where}: key 'transaction.signatures' must hold a string")
        return cls(slot, signatures[0], raw)


@final
@attrs.frozen
class AccountDiffPayload:
    """A view over one account change."""

    slot: int
    tx_index: int | None
    signature: str
    account: str
    pre: Mapping[str, Any] | None = attrs.field(repr=False)
    """The account before (``None`` for a created account)."""
    post: Mapping[str, Any] | None = attrs.field(repr=False)
    """The account after (``None`` for a deleted account)."""
    raw: Mapping[str, Any] = attrs.field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """The diff's identity: ``(signature, account)``."""
        return (self.signature, self.account)

    @classmethod
    def from_raw(cls, raw: Any) -> AccountDiffPayload:
        """Validate ``raw`` and build the view.

        Raises:
            ProtocolError: a required key missing or mistyped.
        """
        where = ACCOUNT_DIFF_NOTIFICATION
        if not isinstance(raw, dict):
            raise ProtocolError(f"{where}: result must be an object, got {_kind(raw)}")
        context = raw.get("context")
        if not isinstance(context, dict):
            raise ProtocolError(f"{where}: key 'context' must be an object")
        slot = _require_slot(context, "slot", where + ".context")
        tx_index = context.get("txIndex", context.get("tx_index"))
        if tx_index is not None and type(tx_index) is not int:
            raise ProtocolError(f"{where}: key 'context.txIndex' must be an integer")
        signature, account = raw.get("signature"), raw.get("account")
        if type(signature) is not str:
            raise ProtocolError(f"{where}: key 'signature' must be a string")
        if type(account) is not str:
            raise ProtocolError(f"{where}: key 'account' must be a string")
        pre, post = raw.get("pre"), raw.get("post")
        for name, value in (("pre", pre), ("post", post)):
            if value is not None and not isinstance(value, dict):
                raise ProtocolError(f"{where}: key {name!r} must be an object or null")
        return cls(slot, tx_index, signature, account, pre, post, raw)


@final
@attrs.frozen
class TransactionNotification:
    """One transaction for subscription ``subscription``."""

    method: ClassVar[str] = TRANSACTION_NOTIFICATION
    subscription: int
    result: TransactionPayload


@final
@attrs.frozen
class AccountDiffNotification:
    """One account change for subscription ``subscription``."""

    method: ClassVar[str] = ACCOUNT_DIFF_NOTIFICATION
    subscription: int
    result: AccountDiffPayload


RpcMessage = (
    TransactionSubscribe
    | AccountDiffSubscribe
    | TransactionUnsubscribe
    | AccountDiffUnsubscribe
    | RpcResult
    | RpcError
    | TransactionNotification
    | AccountDiffNotification
    | UnknownMessage
)
"""Anything the data-plane codec encodes or decodes."""
