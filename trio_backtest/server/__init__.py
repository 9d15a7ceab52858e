"""The local backtest server: embedded default, test peer and fault lab.

Start one with :func:`open_local_server` (an async context manager) or run
:func:`serve_backtest` as a task; ``trio-backtest serve`` does the latter from a shell.

The server executes its synthetic ledger with a real Solana runtime (solders' LiteSVM) and
answers each session's JSON-RPC over HTTP on its data-plane path.
"""

from __future__ import annotations

from ._config import Backpressure as Backpressure
from ._config import ChaosConfig as ChaosConfig
from ._config import Plane as Plane
from ._config import ServerConfig as ServerConfig
from ._controls import FaultControls as FaultControls
from ._controls import HttpFault as HttpFault
from ._faults import FaultStream as FaultStream
from ._faults import Link as Link
from ._ledger import Ledger as Ledger
from ._ledger import LedgerAccountDiff as LedgerAccountDiff
from ._ledger import LedgerConfig as LedgerConfig
from ._ledger import LedgerSlot as LedgerSlot
from ._ledger import LedgerTransaction as LedgerTransaction
from ._memory import MemoryPipeStream as MemoryPipeStream
from ._memory import memory_pipe_pair as memory_pipe_pair
from ._memory_http import MemoryHttpTransport as MemoryHttpTransport
from ._server import LocalServer as LocalServer
from ._server import MemoryConnector as MemoryConnector
from ._server import open_local_server as open_local_server
from ._server import open_server as open_server
from ._server import serve_backtest as serve_backtest
from ._session import SessionState as SessionState
from ._stats import Delivery as Delivery
from ._stats import RpcCall as RpcCall
from ._stats import ServerStatistics as ServerStatistics
