"""A session's line of execution: a shared reference until the session acts, then its own.

Sessions that have not acted see exactly the same chain, so they share one
:class:`Reference` per ``(bundle start, signerFilter)``: it executes slots on demand for the
session that is furthest ahead and caches the results (a bounded LRU of slots; an evicted
slot is executed again, deterministically, from the nearest cached slot or from the bundle's
genesis snapshot). A session that acts (``modifyAccounts``, ``sendTransaction``, a continue
with ``transactions`` or ``modifyAccountStates``) *forks*: its :class:`Chain` takes a copy of
the reference's state at its exact position and executes on the engine for itself from
then on. Reads of a session that has not forked materialize the state at its position.

Order inside a slot (dataplane.md §3): the block's transactions, then the transactions sent
with ``sendTransaction`` during the preceding pause or ready, then the ``transactions`` of
the continue. Account modifications apply at once, before anything else executes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import final

from solders.account import Account
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_ID
from solders.transaction import VersionedTransaction

from ._ledger import Ledger, LedgerSlot
from ._runtime import Engine, Executed, Simulation, World

__all__ = ["Chain", "References", "SlotRun"]


@final
class SlotRun:
    """The transactions of one slot that one line of execution ran, in order."""

    __slots__ = ("_by_signature", "executed", "slot", "start")

    def __init__(
        self, slot: int, start: Mapping[Pubkey, Account | None], executed: list[Executed]
    ) -> None:
        self.slot = slot
        self.start = start
        """The state at the start of the slot (a shallow copy: accounts are immutable)."""
        self.executed = executed
        self._by_signature: dict[str, Executed] | None = None

    def find(self, signature: str) -> Executed | None:
        """The executed transaction with ``signature`` (the last one, if sent twice)."""
        if self._by_signature is None:
            self._by_signature = {e.signature: e for e in self.executed}
        return self._by_signature.get(signature)


def _apply(accounts: dict[Pubkey, Account | None], executed: Executed) -> None:
    writable_keys = (k for k, w in zip(executed.keys, executed.writable, strict=True) if w)
    for key, post in zip(writable_keys, executed.post, strict=True):
        accounts[key] = post


def _block(
    engine: Engine,
    world: World,
    ledger_slot: LedgerSlot,
    start: int,
    stop: int,
    skipped: frozenset[str],
) -> list[Executed]:
    return [
        engine.execute(
            world,
            tx.transaction,
            slot=ledger_slot.slot,
            index=tx.index,
            block_time=ledger_slot.block_time,
        )
        for tx in ledger_slot.transactions[start:stop]
        if tx.fee_payer not in skipped
    ]


#: What a fee payer holds while its fee is computed: more than any fee.
_FEE_PROBE_LAMPORTS = 10**15
#: Slots between two kept checkpoints of a reference's state (the start of a slot).
_CHECKPOINT_EVERY = 8
#: Checkpoints a reference keeps (the newest); an older slot replays from the genesis.
_CHECKPOINTS = 64


@final
class Reference:
    """The shared execution of every session that has not acted, for one bundle and filter.

    The *frontier* world executes forward for the session furthest ahead. A slot evicted from
    the cache is executed again, deterministically, on a scratch world from the nearest
    checkpoint before it; that never moves the frontier, so a session far behind costs
    the ones ahead nothing.
    """

    def __init__(
        self,
        ledger: Ledger,
        engine: Engine,
        genesis: Mapping[Pubkey, Account | None],
        bundle_start: int,
        skipped: frozenset[str],
        cache_slots: int,
    ) -> None:
        self._ledger = ledger
        self._engine = engine
        self._genesis = genesis
        self._bundle_start = bundle_start
        self._skipped = skipped
        self._cache_slots = cache_slots
        self._runs: OrderedDict[int, SlotRun] = OrderedDict()
        self._checkpoints: OrderedDict[int, Mapping[Pubkey, Account | None]] = OrderedDict()
        self._world = World(dict(genesis))
        self._frontier = bundle_start
        self.users = 0
        """Chains following this reference."""
        self.replayed = 0
        """Slots executed again after their results were evicted (statistics)."""

    def run(self, slot: int) -> SlotRun:
        """The results of ``slot`` (executed now if needed)."""
        run = self._runs.get(slot)
        if run is not None:
            self._runs.move_to_end(slot)
            return run
        if slot >= self._frontier:
            while True:
                run = self._execute(self._world, self._frontier)
                self._frontier += 1
                if run.slot == slot:
                    return run
        return self._replay(slot)

    def state_at(self, slot: int, done: int) -> World:
        """The state before block transaction ``done`` of ``slot`` (every earlier one ran)."""
        run = self.run(slot)
        accounts = dict(run.start)
        for executed in run.executed:
            if executed.index >= done:
                break
            _apply(accounts, executed)
        return World(accounts)

    def _replay(self, slot: int) -> SlotRun:
        best = max((s for s in self._checkpoints if s <= slot), default=None)
        if best is None:
            world, at = World(dict(self._genesis)), self._bundle_start
        else:
            world, at = World(dict(self._checkpoints[best])), best
        while True:
            run = self._execute(world, at)
            self.replayed += 1
            if at == slot:
                return run
            at += 1

    def _execute(self, world: World, slot: int) -> SlotRun:
        ledger_slot = self._ledger.slot(slot)
        start = dict(world.accounts)
        if (slot - self._bundle_start) % _CHECKPOINT_EVERY == 0 and slot not in self._checkpoints:
            self._checkpoints[slot] = start
            while len(self._checkpoints) > _CHECKPOINTS:
                self._checkpoints.popitem(last=False)
        executed = _block(
            self._engine, world, ledger_slot, 0, len(ledger_slot.transactions), self._skipped
        )
        run = SlotRun(slot, start, executed)
        self._runs[slot] = run
        self._runs.move_to_end(slot)
        while len(self._runs) > self._cache_slots:
            self._runs.popitem(last=False)
        return run


@final
class References:
    """The live references of one server, shared by key and dropped when unused."""

    def __init__(self, ledger: Ledger, engine: Engine, cache_slots: int) -> None:
        self._ledger = ledger
        self._engine = engine
        self._cache_slots = cache_slots
        self._genesis: Mapping[Pubkey, Account | None] = ledger.genesis()
        self._live: dict[tuple[int, frozenset[str]], Reference] = {}

    def __len__(self) -> int:
        return len(self._live)

    def acquire(self, bundle_start: int, skipped: frozenset[str]) -> Reference:
        """The reference of ``(bundle_start, skipped)``, counted as used once more."""
        key = (bundle_start, skipped)
        reference = self._live.get(key)
        if reference is None:
            reference = Reference(
                self._ledger, self._engine, self._genesis, bundle_start, skipped, self._cache_slots
            )
            self._live[key] = reference
        reference.users += 1
        return reference

    def release(self, reference: Reference) -> None:
        """One user less; the last one frees the reference."""
        reference.users -= 1
        if reference.users <= 0:
            for key, live in list(self._live.items()):
                if live is reference:
                    del self._live[key]


@final
class Chain:
    """One session's execution: it follows a :class:`Reference` until it forks."""

    def __init__(
        self,
        ledger: Ledger,
        engine: Engine,
        references: References,
        *,
        start_slot: int,
        signers: frozenset[str],
        user_log: list[str],
    ) -> None:
        self._ledger = ledger
        self._engine = engine
        self._references = references
        self._skipped = signers
        self._reference: Reference | None = references.acquire(
            ledger.bundle_start(start_slot), signers
        )
        self._world: World | None = None
        self._view: tuple[int, int, World] | None = None
        self._queue: dict[str, VersionedTransaction] = {}
        self._sent: dict[str, Executed] = {}
        self._user_log = user_log
        """Signatures of the user transactions executed, one per execution, in order."""

    @property
    def forked(self) -> bool:
        """Whether the session acted and executes on its own world."""
        return self._world is not None

    def close(self) -> None:
        """The session is gone: stop following the reference."""
        if self._reference is not None:
            self._references.release(self._reference)
            self._reference = None
        self._view = None

    # ------------------------------------------------------------ execution

    def execute_block(self, slot: int, start: int, stop: int) -> list[Executed]:
        """Execute block transactions ``[start, stop)`` of ``slot``."""
        self._view = None
        if self._reference is not None:
            run = self._reference.run(slot)
            return [e for e in run.executed if start <= e.index < stop]
        assert self._world is not None
        ledger_slot = self._ledger.slot(slot)
        return _block(self._engine, self._world, ledger_slot, start, stop, self._skipped)

    def execute_user(self, slot: int, extra: Iterable[VersionedTransaction]) -> list[Executed]:
        """After the block: the queued ``sendTransaction``s, then a continue's transactions."""
        pending = [*self._queue.values(), *extra]
        self._queue.clear()
        if not pending:
            return []
        world = self._fork(slot, None)
        ledger_slot = self._ledger.slot(slot)
        first = len(ledger_slot.transactions)
        results: list[Executed] = []
        for number, transaction in enumerate(pending):
            executed = self._engine.execute(
                world,
                transaction,
                slot=slot,
                index=first + number,
                block_time=ledger_slot.block_time,
                user=True,
            )
            self._sent[executed.signature] = executed
            self._user_log.append(executed.signature)
            results.append(executed)
        self._view = None
        return results

    # ------------------------------------------------------------ acting

    def modify(self, slot: int, done: int, accounts: Mapping[Pubkey, Account | None]) -> None:
        """Install account states now (``modifyAccounts``, ``modifyAccountStates``)."""
        world = self._fork(slot, done)
        for key, account in accounts.items():
            world.set(key, account)
        self._view = None

    def queued(self, signature: str) -> bool:
        """Whether a sent transaction waits for the end of the block."""
        return signature in self._queue

    def sent(self, signature: str) -> Executed | None:
        """The latest execution of a transaction the user sent."""
        return self._sent.get(signature)

    def enqueue(self, slot: int, done: int, transaction: VersionedTransaction) -> str:
        """Queue a sent transaction for the end of the block; a known signature is kept once."""
        signature = str(transaction.signatures[0])
        if signature in self._queue or signature in self._sent:
            return signature
        self._fork(slot, done)
        self._queue[signature] = transaction
        return signature

    # ------------------------------------------------------------ reads

    def view(self, slot: int, done: int) -> World:
        """The state at ``(slot, done)``: read it, do not change it."""
        if self._world is not None:
            return self._world
        cached = self._view
        if cached is not None and cached[0] == slot and cached[1] == done:
            return cached[2]
        assert self._reference is not None
        world = self._reference.state_at(slot, done)
        self._view = (slot, done, world)
        return world

    def account(self, slot: int, done: int, key: Pubkey) -> Account | None:
        """One account at ``(slot, done)`` (programs and sysvars come from the engine)."""
        accounts = self.view(slot, done).accounts
        if key in accounts:
            return accounts[key]
        return self._engine.baseline(key)

    def program_accounts(
        self, slot: int, done: int, program: Pubkey
    ) -> list[tuple[Pubkey, Account]]:
        """Accounts owned by ``program`` at ``(slot, done)``."""
        return self._engine.program_accounts(self.view(slot, done), program)

    def simulate(self, slot: int, done: int, transaction: VersionedTransaction) -> Simulation:
        """Simulate ``transaction`` against the state at ``(slot, done)``."""
        ledger_slot = self._ledger.slot(slot)
        return self._engine.simulate(
            self.view(slot, done), transaction, slot=slot, block_time=ledger_slot.block_time
        )

    def fee_for(self, slot: int, done: int, transaction: VersionedTransaction) -> int | None:
        """The fee ``transaction`` would pay at ``(slot, done)``, whatever its payer holds.

        The runtime computes it while simulating on a scratch copy of the state in which the
        fee payer can pay, so an unfunded payer still learns its fee (as on an RPC node).
        """
        scratch = World(dict(self.view(slot, done).accounts))
        payer = transaction.message.account_keys[0]
        scratch.set(payer, Account(_FEE_PROBE_LAMPORTS, b"", SYSTEM_ID, False, 2**64 - 1))
        return self._engine.fee_for(scratch, transaction)

    def _fork(self, slot: int, done: int | None) -> World:
        if self._world is not None:
            return self._world
        assert self._reference is not None
        if done is None:
            done = len(self._ledger.slot(slot).transactions)
        state = self._reference.state_at(slot, done)
        self._world = World(dict(state.accounts))
        self._references.release(self._reference)
        self._reference = None
        self._view = None
        return self._world
