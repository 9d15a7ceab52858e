"""Models of the control plane (protocol.md §2.1 and §2.2).

Server messages double as the events a managed session hands its user: the codec
decodes ``readyForContinue`` straight into ``ReadyForContinue``, ``error`` into
``ServerError``, and so on.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, final

import attrs

from ._base58 import base58_decode
from ._errors import ProtocolError
from ._errors_model import BacktestError
from ._fields import extra_field, omitted_if_none

if TYPE_CHECKING:
    from solders.account import Account
    from solders.pubkey import Pubkey
    from solders.transaction import Transaction, VersionedTransaction

__all__ = [
    "AccountData",
    "AttachBacktestSession",
    "AttachParallelControlSessionV2",
    "ClientMessage",
    "CloseBacktestSession",
    "CloseSessionV1",
    "Completed",
    "Continue",
    "ContinueParams",
    "ContinueSessionV1",
    "ContinueTo",
    "ContinueToSessionV1",
    "ControlMessage",
    "CreateBacktestSession",
    "CreateSession",
    "CreateSessionParams",
    "Discovery",
    "DiscoveryBatch",
    "KNOWN_STATUSES",
    "ParallelSessionAttachedV2",
    "Paused",
    "ReadyForContinue",
    "ResumeAttachedSession",
    "Sequenced",
    "ServerError",
    "ServerEvent",
    "ServerMessage",
    "SessionAttached",
    "SessionCreated",
    "SessionEventV2",
    "SessionsCreatedV2",
    "Slot",
    "Status",
    "Success",
    "UnknownMessage",
]


def _mapping_or_empty(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return {} if value is None else dict(value)


def _base64_transactions(
    value: Iterable[str | VersionedTransaction | Transaction],
) -> tuple[str, ...]:
    """Base64 strings as given; solders transactions serialized to base64 here, once."""
    if isinstance(value, str | bytes):
        raise TypeError("transactions must be a list of transactions, not a single one")
    encoded: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            encoded.append(item)
            continue
        from solders.transaction import Transaction, VersionedTransaction

        if not isinstance(item, VersionedTransaction | Transaction):
            raise TypeError(
                f"transactions[{index}] must be a base64 str or a solders VersionedTransaction "
                f"or Transaction, got {type(item).__qualname__}"
            )
        encoded.append(base64.b64encode(bytes(item)).decode("ascii"))
    return tuple(encoded)


# Typed copies rather than ``converter=dict``: the attrs mypy plugin takes the
# constructor's parameter type from the converter, and ``dict``'s is unusable.
def _account_states(
    value: Mapping[str | Pubkey, AccountData | Account],
) -> dict[str, AccountData]:
    states: dict[str, AccountData] = {}
    for address, state in value.items():
        if not isinstance(state, AccountData):
            from solders.account import Account

            if not isinstance(state, Account):
                raise TypeError(
                    f"the state of {str(address)[:44]} must be an AccountData or a solders "
                    f"Account, got {type(state).__qualname__}"
                )
            state = AccountData.from_account(state)
        states[str(address)] = state
    return states


def _cursors(value: Mapping[str, int]) -> dict[str, int]:
    return dict(value)


# ---------------------------------------------------------------- client -> server


@final
@attrs.frozen
class Discovery:
    """A background scan filter: report batches ahead that execute this program."""

    program_executed: str
    """Base58 program id."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class CreateSessionParams:
    """Parameters of ``createBacktestSession``; build it with ``CreateSession``."""

    start_slot: int
    """First slot, inclusive."""
    end_slot: int
    """Last slot, inclusive."""
    signer_filter: tuple[str, ...] | None = omitted_if_none()
    """Skip historical transactions signed by these base58 keys."""
    send_summary: bool | None = omitted_if_none()
    """Ask for a ``summary`` in ``completed``."""
    disconnect_timeout_secs: int | None = omitted_if_none()
    """Keep the session this long after its control socket drops (0..900); > 0 makes it
    resumable."""
    capacity_wait_timeout_secs: int | None = omitted_if_none()
    """Wait this long for server capacity at start-up."""
    extra_compute_units: int | None = omitted_if_none()
    """Added to every transaction's compute budget."""
    discoveries: tuple[Discovery, ...] | None = omitted_if_none()
    """Background scan filters."""
    extra: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, converter=_mapping_or_empty)
    """Options newer than this library, sent as given (camelCase keys, as the server
    expects them)."""

    @property
    def resumable(self) -> bool:
        """Whether the server keeps the session across control drops."""
        return bool(self.disconnect_timeout_secs)

    @property
    def slot_count(self) -> int:
        """How many slots the range executes."""
        return self.end_slot - self.start_slot + 1


def CreateSession(
    *,
    start_slot: int,
    end_slot: int | None = None,
    slot_count: int | None = None,
    signer_filter: tuple[str, ...] | list[str] | None = None,
    send_summary: bool | None = None,
    disconnect_timeout_secs: int | None = None,
    capacity_wait_timeout_secs: int | None = None,
    extra_compute_units: int | None = None,
    discoveries: tuple[str | Discovery, ...] | list[str | Discovery] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CreateSessionParams:
    """Build ``CreateSessionParams`` from ``end_slot`` or ``slot_count``.

    ``slot_count=n`` means ``end_slot = start_slot + n``, as in the reference client.
    ``discoveries`` takes program ids (or ``Discovery`` values).

    Raises:
        ValueError: both or neither of ``end_slot`` and ``slot_count`` given, or a
            range that ends before it starts.
    """
    if (end_slot is None) == (slot_count is None):
        raise ValueError("give exactly one of end_slot and slot_count")
    if slot_count is not None:
        if slot_count < 0:
            raise ValueError(f"slot_count must be >= 0, got {slot_count}")
        end_slot = start_slot + slot_count
    assert end_slot is not None
    if end_slot < start_slot:
        raise ValueError(f"end_slot {end_slot} is before start_slot {start_slot}")
    if disconnect_timeout_secs is not None and not 0 <= disconnect_timeout_secs <= 900:
        raise ValueError(
            f"disconnect_timeout_secs must be in 0..900, got {disconnect_timeout_secs}"
        )
    return CreateSessionParams(
        start_slot=start_slot,
        end_slot=end_slot,
        signer_filter=None if signer_filter is None else tuple(signer_filter),
        send_summary=send_summary,
        disconnect_timeout_secs=disconnect_timeout_secs,
        capacity_wait_timeout_secs=capacity_wait_timeout_secs,
        extra_compute_units=extra_compute_units,
        discoveries=None
        if discoveries is None
        else tuple(d if isinstance(d, Discovery) else Discovery(d) for d in discoveries),
        extra=extra,
    )


@final
@attrs.frozen
class AccountData:
    """An account state to install with ``modifyAccountStates`` or ``modifyAccounts``."""

    data: str
    """The account data, encoded as ``encoding`` says."""
    executable: bool
    lamports: int
    owner: str
    """Base58 owner program."""
    space: int
    encoding: str = "base64"
    """``base64`` or ``base58``."""

    @classmethod
    def from_account(cls, account: Account) -> AccountData:
        """The state of a solders ``Account``, its data as base64."""
        data = bytes(account.data)
        return cls(
            data=base64.b64encode(data).decode("ascii"),
            executable=account.executable,
            lamports=account.lamports,
            owner=str(account.owner),
            space=len(data),
        )

    def to_account(self) -> Account:
        """This state as a solders ``Account`` (``rent_epoch`` is solders' default, 0).

        Raises:
            ValueError: the data or the owner cannot be decoded, or ``encoding`` is
                neither ``base64`` nor ``base58``.
        """
        from solders.account import Account
        from solders.pubkey import Pubkey

        try:
            if self.encoding == "base64":
                data = base64.b64decode(self.data, validate=True)
            elif self.encoding == "base58":
                data = base58_decode(self.data)
            else:
                raise ValueError(f"unsupported encoding {self.encoding!r:.40}")
        except binascii.Error as exc:
            raise ValueError(f"the account data is not valid base64 ({exc})") from None
        try:
            owner = Pubkey.from_string(self.owner)
        except ValueError as exc:
            raise ValueError(f"the owner {self.owner!r:.60} is not a base58 public key") from exc
        return Account(self.lamports, data, owner, self.executable)


@final
@attrs.frozen
class ContinueParams:
    """Parameters of ``continue``: how far to advance and what to inject."""

    advance_count: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Slots to execute before the next ``readyForContinue``."""
    transactions: tuple[str, ...] = attrs.field(default=(), converter=_base64_transactions)
    """Serialized transactions to execute first, as base64.

    Also accepts solders ``VersionedTransaction`` and ``Transaction`` values, serialized
    to base64 when the parameters are built.
    """
    modify_account_states: Mapping[str, AccountData] = attrs.field(
        factory=dict, converter=_account_states
    )
    """Account states to install, by base58 address.

    Also accepts solders ``Pubkey`` keys and ``Account`` values (converted with
    `AccountData.from_account`)."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class CreateBacktestSession:
    """Create a session (or, with ``parallel``, a parallel batch)."""

    method: ClassVar[str] = "createBacktestSession"
    params: CreateSessionParams
    parallel: bool = False


@final
@attrs.frozen
class Continue:
    """Execute ``params.advance_count`` slots."""

    method: ClassVar[str] = "continue"
    params: ContinueParams = ContinueParams()


@final
@attrs.frozen
class ContinueTo:
    """Execute up to, not including, transaction ``batch_index`` of ``slot``.

    ``batch_index=None`` (sent as ``null``) pauses at the start of ``slot``.
    """

    method: ClassVar[str] = "continueTo"
    slot: int
    batch_index: int | None = None
    """Index of the transaction to stop before; ``None`` stops at the start of ``slot``,
    before its first batch."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class CloseBacktestSession:
    """End the session; answered by ``success``."""

    method: ClassVar[str] = "closeBacktestSession"


@final
@attrs.frozen
class AttachBacktestSession:
    """Re-attach to a resumable session after a drop (sent snake_case)."""

    method: ClassVar[str] = "attachBacktestSession"
    session_id: str
    last_sequence: int | None
    """Highest ``seqId`` received; ``None`` replays everything kept."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class ResumeAttachedSession:
    """Resume execution after an attach, once the subscriptions are back."""

    method: ClassVar[str] = "resumeAttachedSession"


@final
@attrs.frozen
class ContinueSessionV1:
    """Parallel mode: ``continue`` one sub-session."""

    method: ClassVar[str] = "continueSessionV1"
    session_id: str
    params: ContinueParams = ContinueParams()
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class ContinueToSessionV1:
    """Parallel mode: ``continueTo`` one sub-session."""

    method: ClassVar[str] = "continueToSessionV1"
    session_id: str
    slot: int
    batch_index: int | None = None
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class CloseSessionV1:
    """Parallel mode: close one sub-session."""

    method: ClassVar[str] = "closeSessionV1"
    session_id: str
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class AttachParallelControlSessionV2:
    """Re-attach a parallel batch with one cursor per sub-session (sent snake_case)."""

    method: ClassVar[str] = "attachParallelControlSessionV2"
    control_session_id: str
    last_sequences: Mapping[str, int] = attrs.field(factory=dict, converter=_cursors)
    """Highest ``seqId`` seen, by sub-session id; a missing one replays everything kept."""
    extra: Mapping[str, Any] = extra_field()


# ---------------------------------------------------------------- server -> client


@final
@attrs.frozen
class SessionCreated:
    """The server created a session (once per sub-session in parallel mode)."""

    method: ClassVar[str] = "sessionCreated"
    session_id: str
    rpc_endpoint: str
    """The data plane's address: usually a path, sometimes an absolute URL."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class SessionAttached:
    """Reply to ``attachBacktestSession``."""

    method: ClassVar[str] = "sessionAttached"
    session_id: str
    rpc_endpoint: str
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class SessionsCreatedV2:
    """A parallel create is complete; the three lists run side by side."""

    method: ClassVar[str] = "sessionsCreatedV2"
    control_session_id: str
    session_ids: tuple[str, ...]
    start_slots: tuple[int, ...] | None = omitted_if_none()
    """Each sub-session's first slot; only newer servers send the slot lists (``None``
    when absent: the ranges are then unknown, never an error)."""
    end_slots: tuple[int, ...] | None = omitted_if_none()
    """Each sub-session's last slot (``None`` when absent)."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class ParallelSessionAttachedV2:
    """Reply to ``attachParallelControlSessionV2``."""

    method: ClassVar[str] = "parallelSessionAttachedV2"
    control_session_id: str
    session_ids: tuple[str, ...]
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class ReadyForContinue:
    """The session is idle and accepts ``continue`` / ``continueTo``."""

    method: ClassVar[str] = "readyForContinue"


@final
@attrs.frozen
class Slot:
    """The session is now positioned at ``slot`` (wire: ``slotNotification``)."""

    method: ClassVar[str] = "slotNotification"
    slot: int
    """The slot the session stands at; it has not executed it yet."""


KNOWN_STATUSES: frozenset[str] = frozenset(
    {
        "preparingBundle",
        "bundleReady",
        "startingRuntime",
        "programAccountsLoaded",
        "decodedTransactions",
        "appliedAccountModifications",
        "readyToExecuteUserTransactions",
        "executingBlockTransactions",
        "executedBlockTransactions",
        "executedUserTransactions",
    }
)
"""The ``status`` phases protocol.md documents; any other string is legal too."""


@final
@attrs.frozen
class Status:
    """A progress phase; unknown phase names are kept as they came."""

    method: ClassVar[str] = "status"
    status: str
    """The phase's name, e.g. ``preparingBundle``."""
    extra: Mapping[str, Any] = extra_field()

    @property
    def known(self) -> bool:
        """Whether the phase is one protocol.md documents."""
        return self.status in KNOWN_STATUSES


@final
@attrs.frozen
class Paused:
    """A ``continueTo`` target was reached; the session is ready again."""

    method: ClassVar[str] = "paused"
    slot: int
    """The slot the session stands in."""
    batch_index: int | None = None
    """The index, within ``slot``, of the first transaction not yet executed; ``None``
    when paused at the start of the slot, before its first batch."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class DiscoveryBatch:
    """A batch ahead matched a discovery filter."""

    method: ClassVar[str] = "discoveryBatch"
    slot: int
    """The slot of the matching batch."""
    batch_index: int
    """Its index within the slot; ``continueTo(slot, batch_index)`` stops just before it."""
    transactions: tuple[str, ...]
    """The batch's bincode-serialized ``VersionedTransaction``s, as base64.

    On the wire each is the reference crate's ``EncodedBinary``
    (``{"data": ..., "encoding": "base64"}``); a bare base64 string is accepted too.
    """
    matched: tuple[Any, ...] | None = omitted_if_none()
    """What the server says matched (e.g. the program ids), as sent; ``None`` if absent."""
    extra: Mapping[str, Any] = extra_field()

    def decode_transactions(self) -> list[VersionedTransaction]:
        """The batch's transactions as solders ``VersionedTransaction`` values.

        Raises:
            ProtocolError: a transaction is not a serialized ``VersionedTransaction``.
        """
        from solders.transaction import VersionedTransaction

        decoded: list[VersionedTransaction] = []
        for index, text in enumerate(self.transactions):
            try:
                decoded.append(VersionedTransaction.from_bytes(base64.b64decode(text)))
            except Exception as exc:  # solders raises its own error types
                raise ProtocolError(
                    f"discoveryBatch: transaction {index} is not a serialized "
                    f"VersionedTransaction ({exc})"
                ) from None
        return decoded


@final
@attrs.frozen
class Completed:
    """The range is finished; terminal."""

    method: ClassVar[str] = "completed"
    summary: Mapping[str, Any] | None = None
    """The server's summary, an open mapping (``None`` unless asked for)."""
    agent_stats: Any = None
    """The server's agent statistics, as sent; protocol.md documents ``null``."""
    extra: Mapping[str, Any] = extra_field()


@final
@attrs.frozen
class Success:
    """Acknowledges a close or a resume."""

    method: ClassVar[str] = "success"


@final
@attrs.frozen
class ServerError:
    """The server reported an error (wire: ``error``)."""

    method: ClassVar[str] = "error"
    error: BacktestError
    """The error variant, e.g. `InvalidRequest`; its fields say more."""

    @property
    def message(self) -> str:
        """The error's human message."""
        return self.error.message


@final
@attrs.frozen
class UnknownMessage:
    """A message whose method this library does not know, kept as raw JSON."""

    method: str | None
    """The method name as received (``None`` when there was none)."""
    raw: Mapping[str, Any]
    """The whole decoded JSON object."""


ServerEvent = (
    ReadyForContinue
    | Slot
    | Status
    | Paused
    | DiscoveryBatch
    | Completed
    | Success
    | ServerError
    | UnknownMessage
)
"""What a ``sessionEventV2`` can carry."""


@final
@attrs.frozen
class SessionEventV2:
    """Parallel mode: one sub-session's sequenced event."""

    method: ClassVar[str] = "sessionEventV2"
    session_id: str
    seq_id: int
    event: ServerEvent
    extra: Mapping[str, Any] = extra_field()


ClientMessage = (
    CreateBacktestSession
    | Continue
    | ContinueTo
    | CloseBacktestSession
    | AttachBacktestSession
    | ResumeAttachedSession
    | ContinueSessionV1
    | ContinueToSessionV1
    | CloseSessionV1
    | AttachParallelControlSessionV2
)
"""Every message a client sends on the control socket."""

ServerMessage = (
    SessionCreated
    | SessionAttached
    | SessionsCreatedV2
    | ParallelSessionAttachedV2
    | ReadyForContinue
    | Slot
    | Status
    | Paused
    | DiscoveryBatch
    | Completed
    | Success
    | ServerError
    | SessionEventV2
)
"""Every message a server sends on the control socket."""

ControlMessage = ClientMessage | ServerMessage | UnknownMessage
"""Anything the control codec encodes or decodes."""

M = TypeVar("M", covariant=True)


@final
@attrs.frozen
class Sequenced(Generic[M]):
    """A decoded control message with its top-level ``seqId`` (``None`` when absent)."""

    seq_id: int | None
    message: M
