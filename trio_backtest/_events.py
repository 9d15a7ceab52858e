"""What a managed session hands its user.

Control events are the protocol's own server messages (`ReadyForContinue`, `Slot`,
`Completed`, ...); data-plane events are the views below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, final

import attrs
import orjson

from .protocol import (
    AccountDiffPayload,
    Completed,
    DiscoveryBatch,
    Paused,
    ProtocolError,
    ReadyForContinue,
    ServerError,
    Slot,
    Status,
    TransactionPayload,
)

if TYPE_CHECKING:
    from solders.account import Account
    from solders.transaction_status import EncodedConfirmedTransactionWithStatusMeta

__all__ = [
    "AccountDiff",
    "ControlEvent",
    "ManagedEvent",
    "SessionInfo",
    "StreamGap",
    "SubscriptionNotification",
    "Transaction",
]


@final
@attrs.frozen
class SessionInfo:
    """Identity of a created session."""

    session_id: str
    """The server's id for the session (a bearer secret for its data plane)."""
    rpc_endpoint: str
    """The data plane's absolute ``ws(s)://`` URL."""


@final
@attrs.frozen
class Transaction:
    """One executed transaction matching a transaction subscription."""

    slot: int
    """The slot the transaction executed in."""
    signature: str
    """The transaction's first signature (base58), its identity."""
    raw: Mapping[str, Any] = attrs.field(repr=False)
    """The ``getTransaction``-shaped payload as the server sent it."""

    @classmethod
    def from_payload(cls, payload: TransactionPayload) -> Transaction:
        """The event for a decoded notification payload."""
        return cls(payload.slot, payload.signature, payload.raw)

    @property
    def key(self) -> str:
        """The identity used for de-duplication: the signature."""
        return self.signature

    def decode(self) -> EncodedConfirmedTransactionWithStatusMeta:
        """The payload as solders' ``getTransaction`` type (parsed on each call).

        Raises:
            ProtocolError: the payload does not have the ``getTransaction`` shape.
        """
        from solders.transaction_status import EncodedConfirmedTransactionWithStatusMeta

        try:
            return EncodedConfirmedTransactionWithStatusMeta.from_json(
                orjson.dumps(self.raw).decode()
            )
        except Exception as exc:  # solders raises its own error types
            raise ProtocolError(
                f"transaction {self.signature[:16]}: not in the getTransaction shape ({exc})"
            ) from None


@final
@attrs.frozen
class AccountDiff:
    """One account change matching an account-diff subscription."""

    slot: int
    """The slot of the writing transaction."""
    signature: str
    """The signature of the writing transaction."""
    account: str
    """The changed account (base58)."""
    pre: Mapping[str, Any] | None = attrs.field(repr=False)
    """The account before the transaction (``None`` for a created account)."""
    post: Mapping[str, Any] | None = attrs.field(repr=False)
    """The account after it (``None`` for a deleted account)."""
    raw: Mapping[str, Any] = attrs.field(repr=False)
    """The notification payload as the server sent it."""

    @classmethod
    def from_payload(cls, payload: AccountDiffPayload) -> AccountDiff:
        """The event for a decoded notification payload."""
        return cls(
            payload.slot, payload.signature, payload.account, payload.pre, payload.post, payload.raw
        )

    @property
    def key(self) -> tuple[str, str]:
        """The identity used for de-duplication: ``(signature, account)``."""
        return (self.signature, self.account)

    @property
    def pre_account(self) -> Account | None:
        """`pre` as a solders ``Account`` (``None`` for a created account).

        Raises:
            ProtocolError: ``pre`` is not a ``UiAccount``.
        """
        return _ui_account(self.pre, f"account diff {self.account[:16]}: 'pre'")

    @property
    def post_account(self) -> Account | None:
        """`post` as a solders ``Account`` (``None`` for a deleted account).

        Raises:
            ProtocolError: ``post`` is not a ``UiAccount``.
        """
        return _ui_account(self.post, f"account diff {self.account[:16]}: 'post'")


def _ui_account(ui: Mapping[str, Any] | None, where: str) -> Account | None:
    """A ``UiAccount`` (any of its data encodings) as a solders ``Account``.

    solders reads ``UiAccount`` as the value of ``getAccountInfo``; wrapping it in that
    answer lets its decoder do the work (encodings, key spellings, range checks).
    """
    if ui is None:
        return None
    from solders.rpc.responses import GetAccountInfoResp

    answer = {"jsonrpc": "2.0", "id": 0, "result": {"context": {"slot": 0}, "value": ui}}
    try:
        parsed = GetAccountInfoResp.from_json(orjson.dumps(answer).decode())
    except Exception:  # solders raises its own error types, and says little
        parsed = None
    if not isinstance(parsed, GetAccountInfoResp) or parsed.value is None:
        raise ProtocolError(
            f"{where} is not a UiAccount (lamports, owner, data as [text, encoding], "
            "executable, rentEpoch)"
        )
    return parsed.value


@final
@attrs.frozen
class StreamGap:
    """Notifications of ``from_slot..to_slot`` (inclusive) may be missing.

    Delivered when the server could no longer replay what a dropped subscription
    missed; everything outside the range was delivered exactly once.
    """

    subscription: str
    """The address (program id or account) of the affected subscription."""
    from_slot: int
    """First slot of the range (inclusive)."""
    to_slot: int
    """Last slot of the range (inclusive)."""


ControlEvent = ReadyForContinue | Paused | DiscoveryBatch | Slot | Status | Completed | ServerError
"""Events that come from the control connection."""

SubscriptionNotification = Transaction | AccountDiff | StreamGap
"""Events that come from a data-plane subscription."""

ManagedEvent = ControlEvent | SubscriptionNotification
"""Anything `ManagedBacktestSession.next_event` returns."""
