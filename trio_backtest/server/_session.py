"""Sessions: lifecycle, sequencing, execution, the replay window (protocol.md §3, §5).

A :class:`Session` runs one task in the server's nursery that executes slots. Control
sockets feed it requests through synchronous methods that validate against its state, so
a request that is not acceptable leaves the session untouched. What the session says goes
through :meth:`Session.emit`, which sequences it (resumable sessions), keeps it for replay
and hands it to whichever control socket is attached at that moment.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast, final

import attrs
import trio
from solders.account import Account
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from ..protocol import (
    AccountData,
    AdvanceSlotFailed,
    BacktestError,
    Completed,
    ContinueParams,
    CreateSessionParams,
    DiscoveryBatch,
    Internal,
    InvalidAccountEncoding,
    InvalidAccountOwner,
    InvalidAccountPubkey,
    InvalidRequest,
    InvalidTransactionEncoding,
    InvalidTransactionFormat,
    Paused,
    ReadyForContinue,
    Sequenced,
    ServerError,
    ServerEvent,
    SessionCreated,
    SessionEventV2,
    Slot,
    Status,
    encode_control,
)
from ._chain import Chain, References
from ._config import ServerConfig
from ._ledger import Ledger, base58_decode
from ._runtime import Engine, Executed, account_from_data
from ._stats import Record

__all__ = [
    "Batch",
    "ControlItem",
    "ControlOut",
    "Session",
    "SessionHost",
    "SessionState",
    "Subscriber",
]

logger = logging.getLogger("trio_backtest.server.session")


class SessionState(enum.Enum):
    """Where a session is in its lifecycle (attachment is tracked separately)."""

    STARTING = "starting"
    """Created; going through its start-up phases."""
    READY = "ready"
    """Idle; waiting for a continue."""
    RUNNING = "running"
    """Executing a continue."""
    COMPLETED = "completed"
    """The range is finished."""
    FAILED = "failed"
    """Stopped by an error (e.g. an injected ``AdvanceSlotFailed``); moves no further."""


@final
@attrs.frozen
class ControlItem:
    """One frame for a control socket, with what its record needs."""

    frame: str
    method: str | None
    record: Record | None
    seq_id: int | None = None
    slot: int | None = None
    replay: bool = False


class ControlOut(Protocol):
    """What a session needs from the control socket it is attached to."""

    number: int

    async def wait_room(self) -> None:
        """Wait while the socket has too much unsent."""

    async def wait_flushed(self) -> None:
        """Wait until everything queued was written (or the socket is gone)."""

    def push(self, item: ControlItem) -> None:
        """Queue a frame, in order."""

    def release(self, reason: str) -> None:
        """The session moved to another socket: close this one without detaching."""


class Subscriber(Protocol):
    """What a session needs from one of its data-plane sockets."""

    def collect(self, executed: list[Executed]) -> list[Any]:
        """The notifications these executed transactions produce here."""

    async def put_many(self, items: list[Any]) -> None:
        """Queue notifications under the back-pressure policy."""

    async def wait_flushed(self) -> None:
        """Wait until everything queued so far was written (or the socket is gone)."""

    def finish(self, code: int, reason: str = "") -> None:
        """Close after writing what is queued."""

    def close_now(self, code: int, reason: str = "") -> None:
        """Close at once."""


class SessionHost(Protocol):
    """What a session needs from the server that hosts it (``ServerCore`` implements it)."""

    config: ServerConfig
    ledger: Ledger
    engine: Engine
    references: References

    def record_for(self, session_id: str) -> Record | None:
        """The delivery record of a session or batch (``None`` when recording is off)."""

    def executed_slots_of(self, session_id: str) -> list[int]:
        """The mutable list of a session's fully executed slots."""

    def user_transactions_of(self, session_id: str) -> list[str]:
        """The mutable list of a session's executed user transactions."""

    def take_failure(self, session_id: str) -> str | None:
        """An injected failure for the session's next slot boundary, once."""

    def forget(self, session: Session, reason: Any) -> None:
        """End a session and refuse it from now on."""

    def start_expiry(self, session_or_batch_id: str, timeout: float) -> trio.CancelScope:
        """Forget a detached session or batch after ``timeout`` unless the scope is cancelled."""


@final
@attrs.define
class WindowSlot:
    """An executed slot kept for ``replayFromSlot`` and lookups: what ran of it, in order."""

    slot: int
    executed: list[Executed]

    def find(self, signature: str) -> Executed | None:
        """The executed transaction with ``signature`` in this slot (the latest), if any."""
        for executed in reversed(self.executed):
            if executed.signature == signature:
                return executed
        return None


@final
@attrs.frozen
class _LoggedMessage:
    seq_id: int
    frame: str
    method: str
    slot: int | None


@final
@attrs.frozen
class _ContinueCommand:
    params: ContinueParams
    transactions: tuple[VersionedTransaction, ...] = ()


@final
@attrs.frozen
class _ContinueToCommand:
    slot: int
    batch_index: int | None


_Command = _ContinueCommand | _ContinueToCommand

_STARTUP_PHASES = ("bundleReady", "startingRuntime", "programAccountsLoaded")
#: How often a stalled start-up repeats its ``status`` message.
_STALL_STATUS_INTERVAL = 1.0


class Session:
    """One backtest session (a single session, or one sub-session of a parallel batch)."""

    def __init__(
        self,
        core: SessionHost,
        *,
        session_id: str,
        owner: int,
        params: CreateSessionParams,
        batch: Batch | None = None,
    ) -> None:
        self.core = core
        self.id = session_id
        self.owner = owner
        self.params = params
        self.batch = batch
        self.rpc_endpoint = f"/backtest/{session_id}"
        self.resumable = batch is not None or bool(params.disconnect_timeout_secs)
        self.state = SessionState.STARTING
        self.position = params.start_slot
        """The slot the session is positioned at."""
        self.tx_index = 0
        """Transactions of ``position`` already executed (non-zero after a ``paused``)."""
        self.gone = False
        """Closed, expired or destroyed: forgotten by the server."""
        self.held = False
        self.subscribers: set[Subscriber] = set()
        self.window: deque[WindowSlot] = deque(maxlen=core.config.replay_window)
        self.evicted = False
        """Whether the window has lost an executed slot."""
        self.record = core.record_for(session_id)
        self.log: deque[_LoggedMessage] = deque(maxlen=core.config.sequence_retention)
        self.ready_seq: int | None = None
        """The ``seqId`` of the message that last made the session ready."""
        self.attach_cursor: int | None = None
        """``last_sequence`` of the latest attach, until the resume."""
        self.expiry: trio.CancelScope | None = None
        self.cancel_scope = trio.CancelScope()
        self.counts = {
            "slotsExecuted": 0,
            "transactionsExecuted": 0,
            "transactionsSucceeded": 0,
            "transactionsFailed": 0,
            "accountDiffs": 0,
        }
        self._signers = frozenset(params.signer_filter or ())
        self.chain = Chain(
            core.ledger,
            core.engine,
            core.references,
            start_slot=params.start_slot,
            signers=self._signers,
            user_log=core.user_transactions_of(session_id),
        )
        self._discoveries = tuple(d.program_executed for d in params.discoveries or ())
        self._scanned_upto = params.start_slot - 1
        self._seq = 0
        self._next_subscription = 0
        self._control: ControlOut | None = None
        self._hold_changed = trio.Event()
        self._command: _Command | None = None
        self._command_arrived = trio.Event()

    # ------------------------------------------------------------ attachment

    @property
    def control(self) -> ControlOut | None:
        """The control socket the session's messages go to (``None`` while detached)."""
        return self.batch.control if self.batch is not None else self._control

    def bind(self, control: ControlOut) -> None:
        """Attach a single session to the control socket that created it."""
        self._control = control

    def set_held(self, held: bool) -> None:
        """Hold (or release) execution at the next slot boundary."""
        if self.held != held:
            self.held = held
            self._hold_changed.set()
            self._hold_changed = trio.Event()

    def detach(self, control: ControlOut) -> None:
        """The control socket ``control`` is gone."""
        if self.batch is not None or self._control is not control:
            return
        self._control = None
        if not self.resumable:
            logger.info("session %s destroyed: its control socket dropped", _short(self.id))
            self.core.forget(self, "destroyed")
            return
        self.set_held(True)
        timeout = float(self.params.disconnect_timeout_secs or 0)
        self.expiry = self.core.start_expiry(self.id, timeout)

    def attach(self, control: ControlOut, last_sequence: int | None, attached: ControlItem) -> None:
        """Re-attach a single resumable session: reply, replay, then stay held until resumed."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        old, self._control = self._control, None
        if old is not None and old is not control:
            old.release("the session was attached to another connection")
        self.set_held(True)
        control.push(attached)
        self.replay_to(control, last_sequence)
        self.attach_cursor = last_sequence
        self._control = control

    def replay_to(self, control: ControlOut, last_sequence: int | None) -> None:
        """Queue every kept message newer than ``last_sequence`` with its original ``seqId``."""
        for logged in self.log:
            if last_sequence is None or logged.seq_id > last_sequence:
                control.push(
                    ControlItem(
                        logged.frame,
                        logged.method,
                        self.record,
                        seq_id=logged.seq_id,
                        slot=logged.slot,
                        replay=True,
                    )
                )

    def needs_fresh_ready(self) -> bool:
        """Whether a resume must repeat ``readyForContinue`` (idle, and the replay lacked it)."""
        cursor, self.attach_cursor = self.attach_cursor, None
        return (
            self.state is SessionState.READY
            and self.ready_seq is not None
            and cursor is not None
            and cursor >= self.ready_seq
        )

    # ------------------------------------------------------------ output

    async def emit(self, event: ServerEvent | SessionCreated) -> None:
        """Sequence, keep and send one of the session's messages."""
        if self.gone:
            return
        control = self.control
        if control is not None:
            await control.wait_room()
            if self.gone:
                return
        snake = self.core.config.snake_case
        seq_id: int | None = None
        if self.batch is not None:
            self._seq += 1
            seq_id = self._seq
            wrapped = SessionEventV2(self.id, seq_id, cast(ServerEvent, event))
            frame = encode_control(wrapped, snake_case=snake)
        elif self.resumable:
            self._seq += 1
            seq_id = self._seq
            frame = encode_control(Sequenced(seq_id, event), snake_case=snake)
        else:
            frame = encode_control(event, snake_case=snake)
        method = event.method
        slot = event.slot if isinstance(event, Slot) else None
        if seq_id is not None:
            self.log.append(_LoggedMessage(seq_id, frame, method or "", slot))
        if isinstance(event, ReadyForContinue | Paused):
            self.ready_seq = seq_id
        control = self.control
        if control is not None:
            control.push(ControlItem(frame, method, self.record, seq_id=seq_id, slot=slot))

    async def emit_error(self, error: BacktestError) -> None:
        """Emit ``error`` as the session's own message."""
        await self.emit(ServerError(error))

    # ------------------------------------------------------------ requests

    def request_continue(self, params: ContinueParams) -> BacktestError | None:
        """Accept a ``continue``, or say why not (the session is then unchanged)."""
        if self.state is not SessionState.READY:
            return InvalidRequest(error="session is not ready")
        checked = _check_injections(params)
        if not isinstance(checked, tuple):
            return checked
        transactions, accounts = checked
        if accounts:
            # Modifications apply before anything of the continue executes.
            self.chain.modify(self.position, self.tx_index, accounts)
        self._start(_ContinueCommand(params, transactions))
        return None

    def request_continue_to(self, slot: int, batch_index: int | None) -> BacktestError | None:
        """Accept a ``continueTo``, or say why not (the session is then unchanged)."""
        if self.state is not SessionState.READY:
            return InvalidRequest(error="session is not ready")
        if not self.position <= slot <= self.params.end_slot:
            return InvalidRequest(
                error=f"slot {slot} is outside [{self.position}, {self.params.end_slot}]"
            )
        index = 0 if batch_index is None else batch_index
        if index < 0 or (slot == self.position and index < self.tx_index):
            return InvalidRequest(
                error=f"batchIndex {batch_index} of slot {slot} was already executed"
            )
        self._start(_ContinueToCommand(slot, batch_index))
        return None

    def _start(self, command: _Command) -> None:
        self.state = SessionState.RUNNING
        self._command = command
        self._command_arrived.set()
        self._command_arrived = trio.Event()

    async def _next_command(self) -> _Command:
        while self._command is None:
            await self._command_arrived.wait()
        command, self._command = self._command, None
        return command

    # ------------------------------------------------------------ execution

    async def run(self, stall: float) -> None:
        """The session's task: start up, then execute what the client asks for."""
        with self.cancel_scope:
            try:
                await self._startup(stall)
                await self.emit(Slot(self.position))
                await self._become_ready()
                while self.state not in (SessionState.COMPLETED, SessionState.FAILED):
                    command = await self._next_command()
                    if isinstance(command, _ContinueCommand):
                        await self._continue(command.params, command.transactions)
                    else:
                        await self._continue_to(command.slot, command.batch_index)
            except Exception as exc:
                logger.exception("session %s failed", _short(self.id))
                self.state = SessionState.FAILED
                await self.emit_error(Internal(error=f"internal error: {type(exc).__name__}"))
            finally:
                if self.state is not SessionState.COMPLETED:
                    self.chain.close()

    async def _startup(self, stall: float) -> None:
        await self.emit(Status("preparingBundle"))
        deadline = trio.current_time() + stall
        while trio.current_time() < deadline:
            await trio.sleep(min(_STALL_STATUS_INTERVAL, deadline - trio.current_time()))
            await self.emit(Status("preparingBundle"))
        delay = self.core.config.startup_delay
        for phase in _STARTUP_PHASES:
            if delay:
                await trio.sleep(delay / len(_STARTUP_PHASES))
            await self.emit(Status(phase))
        await self._scan_discoveries()

    async def _become_ready(self) -> None:
        await self.emit(ReadyForContinue())
        self.state = SessionState.READY

    async def _boundary(self) -> bool:
        """Hold while detached; apply an injected failure. False when the session failed."""
        # The control socket paces execution like TCP would: a session never runs ahead
        # of what its client was told, so a drop stops it at the next boundary.
        control = self.control
        if control is not None:
            await control.wait_flushed()
        # Slots with no subscriber never wait on a socket: let other tasks run in between.
        await trio.lowlevel.checkpoint()
        while self.held:
            await self._hold_changed.wait()
        failure = self.core.take_failure(self.id)
        if failure is not None:
            await self.emit_error(AdvanceSlotFailed(slot=self.position, error=failure))
            self.state = SessionState.FAILED
            return False
        return True

    async def _continue(
        self, params: ContinueParams, transactions: tuple[VersionedTransaction, ...]
    ) -> None:
        if params.modify_account_states:
            await self.emit(Status("appliedAccountModifications"))
        extra = transactions
        for _ in range(params.advance_count):
            if not await self._boundary():
                return
            await self._execute(None, extra)
            if extra:
                await self.emit(Status("executedUserTransactions"))
                extra = ()
            if await self._finish_slot():
                return
        await self._flush()
        await self._become_ready()

    async def _continue_to(self, slot: int, batch_index: int | None) -> None:
        while self.position < slot:
            if not await self._boundary():
                return
            await self._execute(None)
            await self._finish_slot()
        await self._execute(0 if batch_index is None else batch_index)
        await self._flush()
        await self.emit(Paused(slot, batch_index))
        self.state = SessionState.READY

    async def _finish_slot(self) -> bool:
        """The current slot ran to its end: move on. True when that completed the range."""
        slot = self.position
        self.counts["slotsExecuted"] += 1
        self.core.executed_slots_of(self.id).append(slot)
        if slot == self.params.end_slot:
            await self._complete()
            return True
        self.position += 1
        self.tx_index = 0
        await self._flush()
        await self.emit(Slot(self.position))
        await self._scan_discoveries()
        return False

    async def _execute(
        self, upto: int | None, extra: tuple[VersionedTransaction, ...] = ()
    ) -> None:
        """Run block transactions up to ``upto`` (``None``: the whole slot, then the user's)."""
        slot = self.position
        total = len(self.core.ledger.slot(slot).transactions)
        start = self.tx_index
        stop = total if upto is None else max(start, min(upto, total))
        executed = self.chain.execute_block(slot, start, stop) if start < stop else []
        self.tx_index = stop
        if upto is None:
            executed += self.chain.execute_user(slot, extra)
        if self.window and self.window[-1].slot == slot:
            self.window[-1].executed.extend(executed)
        else:
            if len(self.window) == self.window.maxlen:
                self.evicted = True
            self.window.append(WindowSlot(slot, executed))
        if not executed:
            return
        counts = self.counts
        for done in executed:
            counts["transactionsExecuted"] += 1
            counts["transactionsSucceeded" if done.succeeded else "transactionsFailed"] += 1
            counts["accountDiffs"] += len(done.diffs)
        # Everything is collected before the first wait, so a subscription that arrives
        # meanwhile finds this batch in the window (replay) instead of missing it.
        batches = [(sub, sub.collect(executed)) for sub in list(self.subscribers)]
        for sub, items in batches:
            if items:
                await sub.put_many(items)

    async def _flush(self) -> None:
        """Policy ``block``: every notification queued so far is written before we go on."""
        if self.core.config.backpressure != "block":
            return
        for sub in list(self.subscribers):
            await sub.wait_flushed()

    async def _complete(self) -> None:
        await self._flush()
        summary = dict(self.counts) if self.params.send_summary else None
        await self.emit(Completed(summary=summary, agent_stats=None))
        self.state = SessionState.COMPLETED
        self.chain.close()
        for sub in list(self.subscribers):
            sub.finish(1000, "session completed")

    async def _scan_discoveries(self) -> None:
        if not self._discoveries:
            return
        last = min(self.params.end_slot, self.position + self.core.config.discovery_lookahead - 1)
        while self._scanned_upto < last:
            self._scanned_upto += 1
            slot = self._scanned_upto
            ledger_slot = self.core.ledger.slot(slot)
            for tx in ledger_slot.transactions:
                if slot == self.position and tx.index < self.tx_index:
                    continue
                if tx.fee_payer in self._signers:
                    continue
                matched = tuple(p for p in self._discoveries if tx.mentions(p))
                if matched:
                    await self.emit(DiscoveryBatch(slot, tx.index, (tx.wire,), matched=matched))

    # ------------------------------------------------------------ data plane support

    def next_subscription_id(self) -> int:
        """A subscription id unique within the session (across its sockets)."""
        self._next_subscription += 1
        return self._next_subscription

    def oldest_replayable(self) -> int | None:
        """The oldest slot a ``replayFromSlot`` may name, when slots were already lost."""
        if self.evicted and self.window:
            return self.window[0].slot
        return None

    def replay_slots(self, from_slot: int) -> Iterable[WindowSlot]:
        """Window entries at or after ``from_slot``, oldest first."""
        return [entry for entry in self.window if entry.slot >= from_slot]

    def find_transaction(self, signature: str) -> Executed | None:
        """An executed transaction of this session: the user's, or one in the window."""
        sent = self.chain.sent(signature)
        if sent is not None:
            return sent
        for entry in reversed(self.window):
            found = entry.find(signature)
            if found is not None:
                return found
        return None

    def census_state(self) -> str:
        """The state name ``statistics()`` counts the session under."""
        return self.state.value

    def summary(self) -> Mapping[str, int]:
        """What the session executed so far."""
        return dict(self.counts)


def _check_injections(
    params: ContinueParams,
) -> BacktestError | tuple[tuple[VersionedTransaction, ...], dict[Pubkey, Account | None]]:
    transactions: list[VersionedTransaction] = []
    for index, tx in enumerate(params.transactions):
        try:
            raw = base64.b64decode(tx, validate=True)
        except (binascii.Error, ValueError) as exc:
            return InvalidTransactionEncoding(index=index, error=str(exc))
        try:
            transactions.append(VersionedTransaction.from_bytes(raw))
        except Exception as exc:  # solders raises its own error types
            return InvalidTransactionFormat(index=index, error=str(exc)[:300])
    accounts: dict[Pubkey, Account | None] = {}
    for address, account in params.modify_account_states.items():
        error = _check_account(address, account)
        if error is not None:
            return error
        accounts[Pubkey.from_string(address)] = account_from_data(account)
    return tuple(transactions), accounts


def _is_pubkey(text: str) -> bool:
    try:
        return len(base58_decode(text)) == 32
    except ValueError:
        return False


def _check_account(address: str, account: AccountData) -> BacktestError | None:
    if not _is_pubkey(address):
        return InvalidAccountPubkey(address=address, error="not a base58 32-byte public key")
    if not _is_pubkey(account.owner):
        return InvalidAccountOwner(address=address, error="owner is not a base58 public key")
    if account.encoding != "base64":
        return InvalidAccountEncoding(
            address=address, encoding=account.encoding, error="only base64 is supported"
        )
    try:
        base64.b64decode(account.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        return InvalidAccountEncoding(address=address, encoding=account.encoding, error=str(exc))
    return None


def _short(session_id: str) -> str:
    """A log-friendly prefix of a session id (the full id is a bearer secret)."""
    return session_id[:6] + "…"


class Batch:
    """A parallel batch: sub-sessions sharing one control socket (protocol.md §3.2)."""

    def __init__(self, core: SessionHost, *, batch_id: str, owner: int, timeout: float) -> None:
        self.core = core
        self.id = batch_id
        self.owner = owner
        self.timeout = timeout
        self.sessions: dict[str, Session] = {}
        self.control: ControlOut | None = None
        self.expiry: trio.CancelScope | None = None
        self.record = core.record_for(batch_id)
        self.gone = False

    def detach(self, control: ControlOut) -> None:
        """The shared control socket is gone: hold every sub-session, start the clock."""
        if self.control is not control:
            return
        self.control = None
        for session in self.sessions.values():
            session.set_held(True)
        self.expiry = self.core.start_expiry(self.id, self.timeout)

    def attach(
        self, control: ControlOut, cursors: Mapping[str, int], attached: ControlItem
    ) -> None:
        """Re-attach: reply, replay each sub-session past its cursor, stay held until resumed."""
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        old, self.control = self.control, None
        if old is not None and old is not control:
            old.release("the batch was attached to another connection")
        control.push(attached)
        for session in self.sessions.values():
            session.set_held(True)
            cursor = cursors.get(session.id)
            session.replay_to(control, cursor)
            session.attach_cursor = cursor
        self.control = control
