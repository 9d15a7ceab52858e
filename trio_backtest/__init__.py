"""Trio client, local server and fault lab for the Solana backtest WebSocket protocol.

The public API: `open_backtest_session` and what it hands out (its ``rpc`` acts inside
the session), the lower-level managers, the events, statuses, errors and constants.
Wire models live in `trio_backtest.protocol`; the local server in `trio_backtest.server`.
"""

from __future__ import annotations

from ._config import CONNECT_TIMEOUT as CONNECT_TIMEOUT
from ._config import DRAIN_TIMEOUT as DRAIN_TIMEOUT
from ._config import GRACEFUL_CLOSE_TIMEOUT as GRACEFUL_CLOSE_TIMEOUT
from ._config import HANDSHAKE_RESPONSE_TIMEOUT as HANDSHAKE_RESPONSE_TIMEOUT
from ._config import KEEPALIVE_INTERVAL as KEEPALIVE_INTERVAL
from ._config import KEEPALIVE_MISS_DEADLINE as KEEPALIVE_MISS_DEADLINE
from ._config import MAX_MESSAGE_SIZE as MAX_MESSAGE_SIZE
from ._config import RECONNECT_BACKOFF_MULTIPLIER as RECONNECT_BACKOFF_MULTIPLIER
from ._config import RECONNECT_INITIAL_BACKOFF as RECONNECT_INITIAL_BACKOFF
from ._config import RECONNECT_JITTER as RECONNECT_JITTER
from ._config import RECONNECT_MAX_ATTEMPTS as RECONNECT_MAX_ATTEMPTS
from ._config import RECONNECT_MAX_BACKOFF as RECONNECT_MAX_BACKOFF
from ._config import RECONNECT_MAX_TOTAL as RECONNECT_MAX_TOTAL
from ._config import RECONNECT_OVERLOAD_MIN_DELAY as RECONNECT_OVERLOAD_MIN_DELAY
from ._config import RECONNECT_UNGATED_ATTEMPTS as RECONNECT_UNGATED_ATTEMPTS
from ._config import RECONNECT_UPTIME_RESET as RECONNECT_UPTIME_RESET
from ._config import ClientConfig as ClientConfig
from ._control import ControlHandle as ControlHandle
from ._control import spawn_control_manager as spawn_control_manager
from ._coordinator import CoordinatorStatistics as CoordinatorStatistics
from ._coordinator import ReconnectCoordinator as ReconnectCoordinator
from ._coordinator import StreamingGuard as StreamingGuard
from ._errors import ContinueSendError as ContinueSendError
from ._errors import ControlClosedError as ControlClosedError
from ._errors import ControlFailedError as ControlFailedError
from ._errors import ManagedSessionError as ManagedSessionError
from ._errors import NotReadyError as NotReadyError
from ._errors import SessionCreateError as SessionCreateError
from ._errors import SubscriptionFailedError as SubscriptionFailedError
from ._events import AccountDiff as AccountDiff
from ._events import ControlEvent as ControlEvent
from ._events import ManagedEvent as ManagedEvent
from ._events import SessionInfo as SessionInfo
from ._events import StreamGap as StreamGap
from ._events import SubscriptionNotification as SubscriptionNotification
from ._events import Transaction as Transaction
from ._parallel import ManagedParallelSession as ManagedParallelSession
from ._parallel import ParallelStatistics as ParallelStatistics
from ._parallel import ParallelSubSession as ParallelSubSession
from ._parallel import open_parallel_session as open_parallel_session
from ._policy import CauseKind as CauseKind
from ._policy import DisconnectCause as DisconnectCause
from ._policy import GiveUp as GiveUp
from ._policy import ReconnectPolicy as ReconnectPolicy
from ._policy import Retry as Retry
from ._ranges import AvailableRange as AvailableRange
from ._ranges import available_ranges as available_ranges
from ._rpc import RpcError as RpcError
from ._rpc import RpcUnavailableError as RpcUnavailableError
from ._rpc import SessionRpc as SessionRpc
from ._session import ManagedBacktestSession as ManagedBacktestSession
from ._session import SessionStatistics as SessionStatistics
from ._session import open_backtest_session as open_backtest_session
from ._status import Closed as Closed
from ._status import Connecting as Connecting
from ._status import ConnectionStatus as ConnectionStatus
from ._status import Failed as Failed
from ._status import Parked as Parked
from ._status import Reconnecting as Reconnecting
from ._status import StatusCell as StatusCell
from ._status import Up as Up
from ._subscription import SubscriptionHandle as SubscriptionHandle
from ._subscription import (
    spawn_account_diff_subscription_manager as spawn_account_diff_subscription_manager,
)
from ._subscription import (
    spawn_transaction_subscription_manager as spawn_transaction_subscription_manager,
)
from ._transport import Connector as Connector
from .protocol import AccountData as AccountData
from .protocol import BacktestError as BacktestError
from .protocol import Completed as Completed
from .protocol import ContinueParams as ContinueParams
from .protocol import CreateSession as CreateSession
from .protocol import CreateSessionParams as CreateSessionParams
from .protocol import DiscoveryBatch as DiscoveryBatch
from .protocol import Paused as Paused
from .protocol import ProtocolError as ProtocolError
from .protocol import ReadyForContinue as ReadyForContinue
from .protocol import ServerError as ServerError
from .protocol import Slot as Slot
from .protocol import Status as Status

__version__ = "0.1.0"
