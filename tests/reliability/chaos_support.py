"""Shared machinery of the reliability tests: fault schedules with a readable repr, a fault
injector for a running local server, a census of live Trio tasks, and the exactly-once checks
that compare what a user received with what the server executed.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal, final

import attrs
import trio

from trio_backtest import (
    AccountDiff,
    ConnectionStatus,
    ManagedEvent,
    ReadyForContinue,
    StatusCell,
    StreamGap,
    Transaction,
)
from trio_backtest._status import check_transition, is_terminal
from trio_backtest.protocol import (
    Completed,
    DiscoveryBatch,
    Paused,
    ProtocolError,
    ServerError,
    SessionEventV2,
    Slot,
    Status,
    decode_control,
)
from trio_backtest.server import LocalServer
from trio_backtest.server._controls import ConnHandle

Plane = Literal["control", "data"]
Kind = Literal["transactions", "account_diffs"]

# --------------------------------------------------------------------------- schedules


@final
@attrs.frozen
class AfterMessages:
    """Fire once the server wrote ``count`` more messages on a matching socket."""

    count: int

    def __str__(self) -> str:
        return f"after {self.count} msgs"


@final
@attrs.frozen
class AtTime:
    """Fire ``seconds`` (virtual) after the faults were armed."""

    seconds: float

    def __str__(self) -> str:
        return f"at t={self.seconds:g}s"


@final
@attrs.frozen
class AfterContinues:
    """Fire right after the client handed over its ``count``-th continue (of any session).

    A control drop then meets continues in flight: the one just queued, and the readers
    of sibling sub-sessions still handing their answers to slow users.
    """

    count: int

    def __str__(self) -> str:
        return f"after continue {self.count}"


Trigger = AfterMessages | AtTime | AfterContinues


@final
@attrs.frozen
class Drop:
    """Lose the socket abruptly, no close frame."""

    def __str__(self) -> str:
        return "drop"


@final
@attrs.frozen
class Close:
    """Close the socket with ``code``."""

    code: int

    def __str__(self) -> str:
        return f"close {self.code}"


@final
@attrs.frozen
class BlackHole:
    """Swallow the socket's traffic both ways for ``seconds``."""

    seconds: float

    def __str__(self) -> str:
        return f"black-hole {self.seconds:g}s"


@final
@attrs.frozen
class Refuse:
    """Refuse the next ``count`` upgrades on the plane with HTTP ``status``."""

    count: int
    status: int

    def __str__(self) -> str:
        return f"refuse {self.count} upgrades with {self.status}"


Action = Drop | Close | BlackHole | Refuse


@final
@attrs.frozen(repr=False)
class Fault:
    """One fault: what, on which plane and socket, and when."""

    plane: Plane
    action: Action
    when: Trigger
    session: int | None = None
    """Index of the (sub-)session whose sockets are hit; ``None``: every session."""
    socket: int | None = None
    """Data plane: which of the session's live data sockets (by age, modulo their number);
    ``None``: all of them."""

    @property
    def kills(self) -> bool:
        """Whether the fault ends a live connection (refusals only stop new ones)."""
        return not isinstance(self.action, Refuse)

    def __repr__(self) -> str:
        if isinstance(self.action, Refuse):
            return f"<{self.action} on {self.plane} {self.when}>"
        where: str = self.plane
        if self.session is not None:
            where += f" of session {self.session}"
        if self.socket is not None and self.plane == "data":
            where += f" socket {self.socket}"
        return f"<{self.action} {where} {self.when}>"


@final
@attrs.frozen(repr=False)
class Schedule:
    """A whole chaos run: the session(s), how the user drives them, and the faults."""

    parallel: bool
    resumable: bool
    slots: int
    """Slots in the whole range."""
    bundle_size: int
    """Server bundle size (sets the parallel split)."""
    stride: int
    """``advance_count`` of every continue."""
    think: float
    """Virtual seconds the user waits before each continue."""
    tx_programs: tuple[int, ...]
    """Ledger program indices of the transaction subscription."""
    diff_programs: tuple[int, ...]
    """Ledger program indices of the account-diff subscription (may be empty)."""
    zstd: bool
    link_rate: int | None
    """Bytes/s of one shared link for every connection of the client (``None``: no limit)."""
    replay_window: int
    """Slots the server keeps for replay."""
    faults: tuple[Fault, ...]
    from_start: bool = False
    """Arm the faults before the session is created (every session is a target then)."""
    event_buffer: int = 1024
    """Capacity of the client's event channels: small, the managers wait for the user."""
    read_delay: float = 0.0
    """Virtual seconds the user of (sub-)session ``i`` spends on each event, times
    ``i + 1``: siblings read at different speeds."""

    def __repr__(self) -> str:
        mode = "parallel batch" if self.parallel else "single session"
        lines = [
            f"Schedule({mode}, {'resumable' if self.resumable else 'NOT resumable'}, "
            f"{self.slots} slots (bundles of {self.bundle_size}), stride {self.stride}, "
            f"think {self.think:g}s,",
            f"  tx programs {list(self.tx_programs)}, diff programs {list(self.diff_programs)}"
            f"{', zstd' if self.zstd else ''}, link "
            f"{'unlimited' if self.link_rate is None else f'{self.link_rate} B/s'}, "
            f"replay window {self.replay_window}, event buffer {self.event_buffer}, "
            f"read delay {self.read_delay:g}s,",
            "  faults"
            + (" (armed before the create)" if self.from_start else "")
            + ":"
            + ("" if self.faults else " none"),
        ]
        lines += [f"    {fault!r}" for fault in self.faults]
        return "\n".join(lines) + ")"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints failing examples with this hook; keep the readable form.
        printer.text(repr(self))

    def failures_possible(self, plane: Plane, max_attempts: int) -> bool:
        """Whether the faults can exhaust a ``plane`` manager's reconnect budget.

        An upper bound: every fault that kills a socket of the plane, and every refusal on
        it, counted against one manager's failure window. On the data plane add the close
        1000 that ends a completed session's socket: when ``Completed`` is late (the
        control connection is down) the subscription reconnects after it, and that
        reconnect is attempt 1 of the window the faults then spend.
        """
        kills = sum(1 for f in self.faults if f.plane == plane and f.kills)
        if plane == "data":
            kills += 1
        refusals = sum(
            f.action.count for f in self.faults if isinstance(f.action, Refuse) and f.plane == plane
        )
        return kills + refusals > max_attempts

    def control_kills(self) -> bool:
        """Whether any fault can end the control connection."""
        return any(f.plane == "control" and f.kills for f in self.faults)


# --------------------------------------------------------------------------- injection


@final
@attrs.define(eq=False)
class _Armed:
    fault: Fault
    session_id: str | None
    remaining: int


class FaultInjector:
    """Applies a schedule's faults to a running server and records when each fired.

    Message triggers count the server's writes through the server's own per-message hook
    (``FaultControls.after_send``); a plain drop after N messages uses the server's own
    deferred-drop rule.
    """

    def __init__(self, server: LocalServer, session_ids: Sequence[str]) -> None:
        self._server = server
        self._session_ids = tuple(session_ids)
        self._armed: list[_Armed] = []
        self._on_continue: list[_Armed] = []
        self.fired: list[tuple[float, Fault, int]] = []
        """``(virtual time, fault, sockets hit)`` for every fault applied by this injector."""
        faults = server.faults
        original = faults.after_send

        def after_send(conn: ConnHandle) -> None:
            original(conn)
            self._count(conn)

        # An instance attribute shadows the method the server calls after each write.
        setattr(faults, "after_send", after_send)  # noqa: B010

    def session_id(self, fault: Fault) -> str | None:
        """The server-side id a fault targets (``None``: every session)."""
        if fault.session is None or not self._session_ids:
            return None
        return self._session_ids[fault.session % len(self._session_ids)]

    async def run(self, faults: Iterable[Fault]) -> None:
        """Arm the message triggers, then fire the timed faults in order; returns when done."""
        began = trio.current_time()
        timed: list[Fault] = []
        for fault in faults:
            if isinstance(fault.when, AtTime):
                timed.append(fault)
            elif isinstance(fault.when, AfterContinues):
                self._on_continue.append(_Armed(fault, self.session_id(fault), fault.when.count))
            elif isinstance(fault.action, Drop) and fault.socket is None:
                self._server.faults.drop(
                    fault.plane, session_id=self.session_id(fault), after_messages=fault.when.count
                )
            else:
                self._armed.append(_Armed(fault, self.session_id(fault), fault.when.count))
        timed.sort(key=lambda f: f.when.seconds if isinstance(f.when, AtTime) else 0.0)
        for fault in timed:
            assert isinstance(fault.when, AtTime)
            await trio.sleep_until(began + fault.when.seconds)
            self.fire(fault, self.session_id(fault))

    def continue_sent(self) -> None:
        """The client handed over a continue: fire the faults waiting for it."""
        for armed in list(self._on_continue):
            armed.remaining -= 1
            if armed.remaining <= 0:
                self._on_continue.remove(armed)
                self.fire(armed.fault, armed.session_id)

    def _count(self, conn: ConnHandle) -> None:
        for armed in list(self._armed):
            if conn.matches(armed.fault.plane, armed.session_id):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._armed.remove(armed)
                    self.fire(armed.fault, armed.session_id)

    def fire(self, fault: Fault, session_id: str | None) -> int:
        """Apply ``fault`` now; the number of sockets it hit."""
        faults = self._server.faults
        action = fault.action
        hits: int
        if isinstance(action, Refuse):
            faults.refuse_upgrades(action.count, action.status, plane=fault.plane)
            hits = 0
        elif fault.socket is not None and fault.plane == "data":
            conns = sorted(
                (c for c in faults.live() if c.matches("data", session_id)),
                key=lambda c: c.number,
            )
            hits = 0
            if conns:
                hits = 1
                _apply(conns[fault.socket % len(conns)], action)
        elif isinstance(action, Drop):
            hits = faults.drop(fault.plane, session_id=session_id)
        elif isinstance(action, Close):
            hits = faults.close(fault.plane, action.code, session_id=session_id, reason="chaos")
        else:
            hits = faults.black_hole(fault.plane, session_id=session_id, duration=action.seconds)
        self.fired.append((trio.current_time(), fault, hits))
        return hits


def _apply(conn: ConnHandle, action: Action) -> None:
    if isinstance(action, Drop):
        conn.drop()
    elif isinstance(action, Close):
        conn.close(action.code, "chaos")
    elif isinstance(action, BlackHole):
        conn.stream.black_hole(action.seconds)


# --------------------------------------------------------------------------- tasks


def live_tasks() -> set[trio.lowlevel.Task]:
    """Every task of the current run, system tasks included."""
    found: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        assert task is not None
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def tasks_under(nurseries: Iterable[trio.Nursery]) -> set[trio.lowlevel.Task]:
    """Every task started, directly or not, in one of ``nurseries``."""
    found: set[trio.lowlevel.Task] = set()
    stack = [task for nursery in nurseries for task in nursery.child_tasks]
    while stack:
        task = stack.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


def client_tasks_left(
    baseline: set[trio.lowlevel.Task], server_nurseries: Iterable[trio.Nursery]
) -> list[str]:
    """Names of tasks that are neither old, nor the server's, nor the caller's own.

    The server's system tasks (a dropped stream closing in the background) are the
    server's too.
    """
    server = tasks_under(server_nurseries)
    me = trio.lowlevel.current_task()
    return sorted(
        task.name
        for task in live_tasks() - baseline - server
        if task is not me and not task.name.startswith("trio_backtest.server.")
    )


# --------------------------------------------------------------------------- statuses


def check_history(name: str, cell: StatusCell) -> None:
    """Every recorded move of ``cell`` is legal and it ended in a terminal status."""
    history: Sequence[ConnectionStatus] = cell.history
    for old, new in itertools.pairwise(history):
        try:
            check_transition(old, new)
        except ValueError as exc:  # pragma: no cover - a failure message
            raise AssertionError(f"{name}: {exc}") from None
    assert is_terminal(cell.value), f"{name} still {cell.value!r} after the block"


# --------------------------------------------------------------------------- exactly once

Notification = Transaction | AccountDiff
Item = tuple[int, object]
"""``(slot, key)`` of one notification."""


@final
@attrs.define
class CallReport:
    """What one ``subscribe_*`` call delivered compared with the ledger."""

    delivered: int = 0
    expected: int = 0
    missing_in_gaps: int = 0
    window_gaps: int = 0
    """Gaps the replay window caused (they end before the session's last slot)."""
    tail_gaps: int = 0
    """Gaps for a tail that could not be recovered after ``Completed`` (they end at the
    session's last slot)."""


def check_subscription_call(
    name: str,
    events: Sequence[ManagedEvent],
    kind: Kind,
    addresses: Sequence[str],
    server: LocalServer,
    executed: Sequence[int],
    end_slot: int,
    *,
    complete: bool,
) -> CallReport:
    """Check one call's notifications against the ledger of the ``executed`` slots.

    Exactly once (no key twice), nothing foreign, execution order for every notification
    only one of the call's addresses matches, and — when the run ``complete``d — nothing
    missing unless each address it matches reported a `StreamGap` covering its slot. Each
    gap must be exact: everything after its first slot (which the drop may have cut) up to
    its last, matching only that address, really is missing. A gap ending at ``end_slot``
    is a tail given up after ``Completed``; any other is the replay window's.
    """
    wanted = set(addresses)
    cls = Transaction if kind == "transactions" else AccountDiff
    delivered: list[Notification] = [e for e in events if isinstance(e, cls)]
    gaps = [e for e in events if isinstance(e, StreamGap) and e.subscription in wanted]
    expected: list[tuple[Item, frozenset[str]]] = []
    for slot in executed:
        ledger_slot = server.ledger.slot(slot)
        if kind == "transactions":
            for tx in ledger_slot.transactions:
                hit = frozenset(a for a in addresses if tx.mentions(a))
                if hit:
                    expected.append(((slot, tx.signature), hit))
        else:
            for diff in ledger_slot.diffs:
                hit = frozenset(a for a in addresses if diff.matches(a, "program"))
                if hit:
                    expected.append(((slot, (diff.signature, diff.account)), hit))
    matches = {key: (slot, hit) for (slot, key), hit in expected}
    keys = [e.key for e in delivered]
    counts = Counter(keys)
    twice = [key for key, n in counts.items() if n > 1]
    assert not twice, f"{name}: delivered more than once: {twice[:3]}"
    for event in delivered:
        assert event.key in matches, f"{name}: {event.key!r} is not one of this call's"
        assert matches[event.key][0] == event.slot, f"{name}: {event.key!r} has the wrong slot"
    # Execution order, per address, for what only that address can have delivered.
    position = {key: index for index, ((_, key), _) in enumerate(expected)}
    for address in addresses:
        only = [k for k in keys if matches[k][1] == frozenset({address})]
        assert only == sorted(only, key=position.__getitem__), f"{name}: {address} out of order"
    report = CallReport(delivered=len(delivered), expected=len(expected))
    for gap in gaps:
        assert gap.from_slot <= gap.to_slot <= end_slot, f"{name}: {gap} is not within the range"
        if gap.to_slot == end_slot:
            report.tail_gaps += 1
        else:
            report.window_gaps += 1
    got = set(keys)
    for gap in gaps:
        lost = [
            key
            for (slot, key), hit in expected
            if hit == frozenset({gap.subscription}) and gap.from_slot < slot <= gap.to_slot
        ]
        wrongly = [key for key in lost if key in got]
        assert not wrongly, f"{name}: {gap} claims a loss of {len(wrongly)} delivered items"
    if complete:
        for (slot, key), hit in expected:
            if key in got:
                continue
            covered = all(
                any(g.subscription == a and g.from_slot <= slot <= g.to_slot for g in gaps)
                for a in hit
            )
            assert covered, f"{name}: lost {key!r} of slot {slot} without a StreamGap"
            report.missing_in_gaps += 1
    return report


# --------------------------------------------------------------------------- control events

_VISIBLE = (Slot, Status, DiscoveryBatch, Completed, Paused, ServerError)


def server_control_events(
    server: LocalServer, session_id: str, *, parallel: bool
) -> tuple[list[object], list[int]]:
    """The user-visible control messages the server emitted for a session, in order.

    Each sequenced message counts once however often it was (re)sent. Returns the messages
    and the ``seqId`` values seen (empty for a session without sequencing).
    """
    by_seq: dict[int, object] = {}
    unsequenced: list[object] = []
    for delivery in server.delivered(session_id):
        if delivery.plane != "control":
            continue
        try:
            decoded = decode_control(delivery.frame)
        except ProtocolError:  # pragma: no cover - the server only writes valid frames
            raise AssertionError("the server wrote an undecodable control frame") from None
        message: object = decoded.message
        seq_id = decoded.seq_id
        if parallel:
            assert isinstance(message, SessionEventV2)
            if message.session_id != session_id:
                continue
            seq_id, message = message.seq_id, message.event
        if seq_id is None:
            unsequenced.append(message)
        elif seq_id in by_seq:
            assert by_seq[seq_id] == message, f"seqId {seq_id} was sent with two contents"
        else:
            by_seq[seq_id] = message
    ordered = [by_seq[s] for s in sorted(by_seq)] if by_seq else unsequenced
    return [m for m in ordered if isinstance(m, _VISIBLE)], sorted(by_seq)


def check_control_events(
    name: str,
    events: Sequence[ManagedEvent],
    server: LocalServer,
    session_id: str,
    *,
    parallel: bool,
    complete: bool,
    continues: int,
) -> int:
    """The user's control events are the server's, each once, in order; returns their count.

    Also: one readiness answer per continue, never a continue the server refused.
    """
    expected, seq_ids = server_control_events(server, session_id, parallel=parallel)
    if seq_ids and complete:
        assert seq_ids == list(range(1, len(seq_ids) + 1)), f"{name}: the server skipped a seqId"
    got = [e for e in events if isinstance(e, _VISIBLE)]
    if complete:
        assert got == expected, f"{name}: control events differ from the server's"
        assert isinstance(events[-1], Completed), f"{name}: the last event is not Completed"
    else:
        assert got == expected[: len(got)], f"{name}: control events are not the server's prefix"
    assert not any(isinstance(m, ServerError) for m in expected), f"{name}: a refused request"
    readies = sum(isinstance(e, ReadyForContinue) for e in events)
    answers = readies + sum(isinstance(e, Completed) for e in events)
    assert continues <= answers <= continues + 1, (
        f"{name}: {continues} continues got {answers} readiness answers"
    )
    return len(got) + readies


def shutdown_within(left_at: float | None, closed_at: float, budget: float) -> None:
    """Leaving the block took at most ``budget`` virtual seconds."""
    assert left_at is not None
    took = closed_at - left_at
    assert took <= budget + 1e-9, f"shutdown took {took:.3f} s > {budget} s"
    assert math.isfinite(took)


def forbid(items: Iterable[str], what: str) -> None:
    """Fail listing ``items`` if there are any."""
    items = list(items)
    assert not items, f"{what}: {items}"


def check_and_forget_captured_logs(secret: str) -> int:
    """Check every log record pytest has captured so far for ``secret``, then drop them.

    pytest keeps every record of a test until it ends; thousands of examples or a long
    soak would hold gigabytes. The suite-wide check (no record contains the API key) is
    made here, record by record, before they are dropped. Returns how many were checked.
    """
    checked = 0
    for handler in logging.getLogger().handlers:
        records = getattr(handler, "records", None)
        reset = getattr(handler, "reset", None)
        if not isinstance(records, list) or reset is None:
            continue
        for record in records:
            assert secret not in record.getMessage(), f"API key leaked: {record.name}"
            assert secret not in (record.exc_text or ""), f"API key leaked: {record.name}"
        checked += len(records)
        reset()
    return checked
