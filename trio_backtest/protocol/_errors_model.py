"""``BacktestError``: the server's error values (protocol.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, final

import attrs

__all__ = [
    "AdvanceSlotFailed",
    "BacktestError",
    "ClerkError",
    "InitializingSysvarsFailed",
    "Internal",
    "InvalidAccountEncoding",
    "InvalidAccountOwner",
    "InvalidAccountPubkey",
    "InvalidBlockhashFormat",
    "InvalidRequest",
    "InvalidTransactionEncoding",
    "InvalidTransactionFormat",
    "NoMoreBlocks",
    "SessionNotFound",
    "SessionOwnerMismatch",
    "SimulationError",
    "UnknownBacktestError",
    "ERROR_VARIANTS",
]


@attrs.frozen
class BacktestError:
    """Base of every error variant the server can report.

    Match on the subclasses (``case SessionNotFound(session_id=sid):``); every variant
    has ``name`` (its PascalCase wire name) and ``message`` (a human-readable line).
    """

    name: ClassVar[str] = ""

    @property
    def message(self) -> str:
        """The human message: the ``error`` or ``reason`` text when present, else the name."""
        for key in ("error", "reason"):
            value = getattr(self, key, None)
            if isinstance(value, str) and value:
                return f"{self.name}: {value}"
        return self.name


@final
@attrs.frozen
class InvalidTransactionEncoding(BacktestError):
    """A submitted transaction could not be decoded."""

    name: ClassVar[str] = "InvalidTransactionEncoding"
    index: int
    """Position of the transaction in the ``continue`` request."""
    error: str


@final
@attrs.frozen
class InvalidTransactionFormat(BacktestError):
    """A submitted transaction decoded but is not a valid transaction."""

    name: ClassVar[str] = "InvalidTransactionFormat"
    index: int
    """Position of the transaction in the ``continue`` request."""
    error: str


@final
@attrs.frozen
class InvalidAccountEncoding(BacktestError):
    """An account override's data could not be decoded."""

    name: ClassVar[str] = "InvalidAccountEncoding"
    address: str
    encoding: str
    error: str


@final
@attrs.frozen
class InvalidAccountOwner(BacktestError):
    """An account override names an invalid owner."""

    name: ClassVar[str] = "InvalidAccountOwner"
    address: str
    error: str


@final
@attrs.frozen
class InvalidAccountPubkey(BacktestError):
    """An account override's address is not a valid public key."""

    name: ClassVar[str] = "InvalidAccountPubkey"
    address: str
    error: str


@final
@attrs.frozen
class NoMoreBlocks(BacktestError):
    """The historical range has no further blocks."""

    name: ClassVar[str] = "NoMoreBlocks"


@final
@attrs.frozen
class AdvanceSlotFailed(BacktestError):
    """The simulator could not advance past a slot."""

    name: ClassVar[str] = "AdvanceSlotFailed"
    slot: int
    error: str


@final
@attrs.frozen
class InvalidRequest(BacktestError):
    """The request was not acceptable in the session's current state."""

    name: ClassVar[str] = "InvalidRequest"
    error: str


@final
@attrs.frozen
class Internal(BacktestError):
    """An internal server failure."""

    name: ClassVar[str] = "Internal"
    error: str


@final
@attrs.frozen
class InvalidBlockhashFormat(BacktestError):
    """A block's hash could not be parsed."""

    name: ClassVar[str] = "InvalidBlockhashFormat"
    slot: int
    error: str


@final
@attrs.frozen
class InitializingSysvarsFailed(BacktestError):
    """The simulator could not set up the sysvars of a slot."""

    name: ClassVar[str] = "InitializingSysvarsFailed"
    slot: int
    error: str


@final
@attrs.frozen
class ClerkError(BacktestError):
    """The server's data service failed."""

    name: ClassVar[str] = "ClerkError"
    error: str


@final
@attrs.frozen
class SimulationError(BacktestError):
    """Executing a transaction failed inside the simulator."""

    name: ClassVar[str] = "SimulationError"
    error: str


@final
@attrs.frozen
class SessionNotFound(BacktestError):
    """Attach to a session id the server does not know (or that expired). Final."""

    name: ClassVar[str] = "SessionNotFound"
    session_id: str


@final
@attrs.frozen
class SessionOwnerMismatch(BacktestError):
    """Attach to a session created under another API key. Final."""

    name: ClassVar[str] = "SessionOwnerMismatch"


@final
@attrs.frozen
class UnknownBacktestError(BacktestError):
    """A variant this library does not know, kept with its raw fields."""

    variant: str
    """The variant name as received."""
    fields: Mapping[str, Any] | None = None
    """The variant's fields as received (``None`` for a bare name)."""

    @property
    def message(self) -> str:
        """The ``error`` or ``reason`` text when present, else the variant name."""
        if isinstance(self.fields, Mapping):
            for key in ("error", "reason"):
                value = self.fields.get(key)
                if isinstance(value, str) and value:
                    return f"{self.variant}: {value}"
        return self.variant


ERROR_VARIANTS: Mapping[str, type[BacktestError]] = {
    cls.name: cls
    for cls in (
        InvalidTransactionEncoding,
        InvalidTransactionFormat,
        InvalidAccountEncoding,
        InvalidAccountOwner,
        InvalidAccountPubkey,
        NoMoreBlocks,
        AdvanceSlotFailed,
        InvalidRequest,
        Internal,
        InvalidBlockhashFormat,
        InitializingSysvarsFailed,
        ClerkError,
        SimulationError,
        SessionNotFound,
        SessionOwnerMismatch,
    )
}
"""Every known variant by its PascalCase wire name."""
