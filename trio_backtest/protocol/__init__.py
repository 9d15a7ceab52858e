"""The wire protocol, sans I/O: models and the codec (no trio import anywhere here).

See ``protocol.md``. Everything that crosses a socket is encoded and decoded by
``trio_backtest.protocol.codec``.
"""

from __future__ import annotations

from ._control import KNOWN_STATUSES as KNOWN_STATUSES
from ._control import AccountData as AccountData
from ._control import AttachBacktestSession as AttachBacktestSession
from ._control import AttachParallelControlSessionV2 as AttachParallelControlSessionV2
from ._control import ClientMessage as ClientMessage
from ._control import CloseBacktestSession as CloseBacktestSession
from ._control import CloseSessionV1 as CloseSessionV1
from ._control import Completed as Completed
from ._control import Continue as Continue
from ._control import ContinueParams as ContinueParams
from ._control import ContinueSessionV1 as ContinueSessionV1
from ._control import ContinueTo as ContinueTo
from ._control import ContinueToSessionV1 as ContinueToSessionV1
from ._control import ControlMessage as ControlMessage
from ._control import CreateBacktestSession as CreateBacktestSession
from ._control import CreateSession as CreateSession
from ._control import CreateSessionParams as CreateSessionParams
from ._control import Discovery as Discovery
from ._control import DiscoveryBatch as DiscoveryBatch
from ._control import ParallelSessionAttachedV2 as ParallelSessionAttachedV2
from ._control import Paused as Paused
from ._control import ReadyForContinue as ReadyForContinue
from ._control import ResumeAttachedSession as ResumeAttachedSession
from ._control import Sequenced as Sequenced
from ._control import ServerError as ServerError
from ._control import ServerEvent as ServerEvent
from ._control import ServerMessage as ServerMessage
from ._control import SessionAttached as SessionAttached
from ._control import SessionCreated as SessionCreated
from ._control import SessionEventV2 as SessionEventV2
from ._control import SessionsCreatedV2 as SessionsCreatedV2
from ._control import Slot as Slot
from ._control import Status as Status
from ._control import Success as Success
from ._control import UnknownMessage as UnknownMessage
from ._errors import ProtocolError as ProtocolError
from ._errors_model import ERROR_VARIANTS as ERROR_VARIANTS
from ._errors_model import AdvanceSlotFailed as AdvanceSlotFailed
from ._errors_model import BacktestError as BacktestError
from ._errors_model import ClerkError as ClerkError
from ._errors_model import InitializingSysvarsFailed as InitializingSysvarsFailed
from ._errors_model import Internal as Internal
from ._errors_model import InvalidAccountEncoding as InvalidAccountEncoding
from ._errors_model import InvalidAccountOwner as InvalidAccountOwner
from ._errors_model import InvalidAccountPubkey as InvalidAccountPubkey
from ._errors_model import InvalidBlockhashFormat as InvalidBlockhashFormat
from ._errors_model import InvalidRequest as InvalidRequest
from ._errors_model import InvalidTransactionEncoding as InvalidTransactionEncoding
from ._errors_model import InvalidTransactionFormat as InvalidTransactionFormat
from ._errors_model import NoMoreBlocks as NoMoreBlocks
from ._errors_model import SessionNotFound as SessionNotFound
from ._errors_model import SessionOwnerMismatch as SessionOwnerMismatch
from ._errors_model import SimulationError as SimulationError
from ._errors_model import UnknownBacktestError as UnknownBacktestError
from ._rpc import INVALID_PARAMS as INVALID_PARAMS
from ._rpc import METHOD_NOT_FOUND as METHOD_NOT_FOUND
from ._rpc import PARSE_ERROR as PARSE_ERROR
from ._rpc import REPLAY_WINDOW_EXCEEDED as REPLAY_WINDOW_EXCEEDED
from ._rpc import AccountDiffNotification as AccountDiffNotification
from ._rpc import AccountDiffPayload as AccountDiffPayload
from ._rpc import AccountDiffSubscribe as AccountDiffSubscribe
from ._rpc import AccountDiffUnsubscribe as AccountDiffUnsubscribe
from ._rpc import RpcError as RpcError
from ._rpc import RpcMessage as RpcMessage
from ._rpc import RpcResult as RpcResult
from ._rpc import TransactionNotification as TransactionNotification
from ._rpc import TransactionPayload as TransactionPayload
from ._rpc import TransactionSubscribe as TransactionSubscribe
from ._rpc import TransactionUnsubscribe as TransactionUnsubscribe
from .codec import decode_control as decode_control
from .codec import decode_rpc as decode_rpc
from .codec import encode_control as encode_control
from .codec import encode_rpc as encode_rpc

__all__ = [
    # the codec
    "decode_control",
    "decode_rpc",
    "encode_control",
    "encode_rpc",
    # the one exception
    "ProtocolError",
    # control plane (protocol.md §2)
    "KNOWN_STATUSES",
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
    # server errors (protocol.md §4)
    "ERROR_VARIANTS",
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
    # data plane (protocol.md §5)
    "INVALID_PARAMS",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "REPLAY_WINDOW_EXCEEDED",
    "AccountDiffNotification",
    "AccountDiffPayload",
    "AccountDiffSubscribe",
    "AccountDiffUnsubscribe",
    "RpcError",
    "RpcMessage",
    "RpcResult",
    "TransactionNotification",
    "TransactionPayload",
    "TransactionSubscribe",
    "TransactionUnsubscribe",
]
