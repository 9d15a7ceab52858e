"""The state one server shares between its connections: registry, ledger, counters, faults."""

from __future__ import annotations

import hmac
import itertools
import logging
import secrets
from collections import Counter, OrderedDict, deque
from typing import Literal, final

import trio

from ._chain import References
from ._config import ServerConfig
from ._controls import FaultControls
from ._ledger import Ledger
from ._runtime import Engine
from ._session import Batch, Session
from ._stats import Counters, Delivery, Record, RpcCall, ServerStatistics

__all__ = ["ServerCore"]

logger = logging.getLogger("trio_backtest.server")

ForgetReason = Literal["closed", "expired", "destroyed"]

#: Ids of ended sessions remembered, so their data plane answers 502 rather than 404.
_ENDED_MEMORY = 10_000


@final
class ServerCore:
    """Everything the connection handlers and sessions of one server share."""

    def __init__(self, config: ServerConfig, nursery: trio.Nursery) -> None:
        self.config = config
        self.nursery = nursery
        # Sessions at different positions share plans: keep a few thousand transactions.
        self.ledger = Ledger(config.ledger, cache_slots=256, cache_transactions=8192)
        self.engine = Engine.shared(self.ledger)
        self.references = References(self.ledger, self.engine, config.reference_cache_slots)
        self.counters = Counters()
        self.faults = FaultControls(self.counters, config.chaos)
        self.sessions: dict[str, Session] = {}
        """Live sessions and sub-sessions by id: what the data plane serves."""
        self.batches: dict[str, Batch] = {}
        self._records: dict[str, Record] = {}
        self._executed: dict[str, list[int]] = {}
        self._user_transactions: dict[str, list[str]] = {}
        self._rpc_calls: dict[str, deque[RpcCall]] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._connection_numbers = itertools.count(1)
        self._connections_changed = trio.lowlevel.ParkingLot()

    # ------------------------------------------------------------ identity

    def owner_of_key(self, key: str | None) -> int | None:
        """The index of ``key`` among the configured keys, compared in constant time."""
        if key is None:
            return None
        found: int | None = None
        given = key.encode()
        for index, candidate in enumerate(self.config.api_keys):
            # Every key is compared, so timing does not tell which one matched.
            if hmac.compare_digest(given, candidate.encode()) and found is None:
                found = index
        return found

    def new_session_id(self) -> str:
        """An unguessable session id (it is the data plane's only secret)."""
        while True:
            session_id = secrets.token_urlsafe(16)
            if session_id not in self.sessions and session_id not in self.batches:
                return session_id

    def next_connection_number(self) -> int:
        """The number of the next accepted connection."""
        return next(self._connection_numbers)

    def connection_finished(self) -> None:
        """A connection handler is done (wakes :meth:`wait_connections_finished`)."""
        self._connections_changed.unpark_all()

    async def wait_connections_finished(self) -> None:
        """Wait until no accepted connection is left."""
        while self.faults.live():
            await self._connections_changed.park()

    def live_sessions_of(self, owner: int) -> int:
        """Live sessions of one key; a parallel batch counts once."""
        singles = sum(1 for s in self.sessions.values() if s.batch is None and s.owner == owner)
        return singles + sum(1 for b in self.batches.values() if b.owner == owner)

    # ------------------------------------------------------------ records

    def record_for(self, session_id: str) -> Record | None:
        """The delivery record of a session or batch (``None`` when recording is off)."""
        if not self.config.record:
            return None
        record = self._records.get(session_id)
        if record is None:
            self._records[session_id] = record = deque(maxlen=self.config.record_limit)
        return record

    def delivered(self, session_id: str) -> tuple[Delivery, ...]:
        """Every frame written for a session or batch, in write order."""
        return tuple(self._records.get(session_id, ()))

    def executed_slots_of(self, session_id: str) -> list[int]:
        """The mutable list of a session's fully executed slots."""
        return self._executed.setdefault(session_id, [])

    def rpc_calls_of(self, session_id: str, *, create: bool = True) -> deque[RpcCall] | None:
        """The record of HTTP JSON-RPC requests to a live or ended session (``None`` when
        recording is off or the id never named a session)."""
        calls = self._rpc_calls.get(session_id)
        if calls is not None or not create or not self.config.record:
            return calls
        if session_id not in self.sessions and not self.ended(session_id):
            return None
        calls = self._rpc_calls[session_id] = deque(maxlen=self.config.record_limit)
        return calls

    def available_ranges(self) -> list[dict[str, int]]:
        """What ``GET /available-ranges`` lists: the bundles of the configured window."""
        size = self.config.ledger.bundle_size
        first = self.ledger.bundle_start(self.config.ranges_start_slot)
        return [
            {
                "bundleStartSlot": start,
                "maxBundleEndSlot": start + size - 1,
                "snapshotSlot": start,
            }
            for start in range(first, first + size * self.config.ranges_count, size)
        ]

    def user_transactions_of(self, session_id: str) -> list[str]:
        """The mutable list of a session's executed user transactions."""
        return self._user_transactions.setdefault(session_id, [])

    def take_failure(self, session_id: str) -> str | None:
        """An injected failure for the session's next slot boundary, once."""
        return self.faults.take_failure(session_id)

    def ended(self, session_id: str) -> bool:
        """Whether ``session_id`` named a session that is gone (closed, expired, destroyed)."""
        return session_id in self._ended

    # ------------------------------------------------------------ lifecycle

    def register(self, session: Session) -> None:
        """Make a new session (or sub-session) reachable."""
        self.sessions[session.id] = session
        self.counters.sessions_created += 1

    def start_session(self, session: Session, stall: float) -> None:
        """Start a session's task in the server's nursery."""
        self.nursery.start_soon(session.run, stall, name=f"session-{session.id[:6]}")

    def start_expiry(self, session_or_batch_id: str, timeout: float) -> trio.CancelScope:
        """Forget a detached session or batch after ``timeout`` unless the scope is cancelled."""
        scope = trio.CancelScope()
        self.nursery.start_soon(self._expire, session_or_batch_id, timeout, scope)
        return scope

    async def _expire(self, target_id: str, delay: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(delay)
            batch = self.batches.get(target_id)
            if batch is not None:
                logger.info("parallel batch expired after %s s detached", delay)
                self.forget_batch(batch, "expired")
                return
            session = self.sessions.get(target_id)
            if session is not None:
                logger.info("session expired after %s s detached", delay)
                self.forget(session, "expired")

    def forget(self, session: Session, reason: ForgetReason) -> None:
        """End a session: stop its task, close its data sockets, refuse it from now on."""
        if session.gone:
            return
        session.gone = True
        session.cancel_scope.cancel()
        if session.expiry is not None:
            session.expiry.cancel()
        self.sessions.pop(session.id, None)
        session.chain.close()
        self._ended[session.id] = None
        while len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)
        if session.batch is not None:
            session.batch.sessions.pop(session.id, None)
        if reason == "closed":
            self.counters.sessions_closed += 1
            code, text = 1000, "session closed"
        else:
            if reason == "expired":
                self.counters.sessions_expired += 1
            else:
                self.counters.sessions_destroyed += 1
            code, text = 4404, f"session {reason}"
        for sub in list(session.subscribers):
            sub.close_now(code, text)
        session.set_held(False)

    def forget_batch(self, batch: Batch, reason: ForgetReason) -> None:
        """End a parallel batch and all its sub-sessions."""
        if batch.gone:
            return
        batch.gone = True
        if batch.expiry is not None:
            batch.expiry.cancel()
        for session in list(batch.sessions.values()):
            self.forget(session, reason)
        self.batches.pop(batch.id, None)

    # ------------------------------------------------------------ statistics

    def statistics(self) -> ServerStatistics:
        """A snapshot of the counters and the live session census."""
        by_state: Counter[str] = Counter()
        detached = 0
        for session in self.sessions.values():
            by_state[session.census_state()] += 1
            if session.resumable and session.control is None:
                detached += 1
        return self.counters.snapshot(by_state, detached)
