"""The Solana runtime of the local server: one LiteSVM engine, many worlds.

A :class:`World` is a plain mapping ``address -> Account`` holding only the accounts its
line of execution touched; programs and sysvars live in the :class:`Engine`. To execute on
behalf of a world the engine loads it (every account it holds for another world is set back
to this world's value, or to the engine's own baseline), executes, and reads the written
accounts back into the world. Loading is skipped when the engine already holds that world.

A full ``LiteSVM`` costs megabytes and its memory is not given back, so a server has one
engine however many sessions it hosts. Signature verification, the blockhash check and the
transaction history are off: the same planned transaction runs in many worlds, and any
signer can be spoofed (as on the hosted simulator).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from typing import Any, Final, final

import orjson
from solders.account import Account
from solders.clock import Clock
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_ID
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import (
    FailedTransactionMetadata,
    SimulatedTransactionInfo,
    TransactionMetadata,
)
from solders.transaction_status import UiLoadedAddresses, UiTransactionStatusMeta

from ..protocol import AccountData
from ._ledger import MEMO_ID, Ledger, base58_encode

__all__ = ["Diff", "Engine", "Executed", "Simulation", "World", "account_from_data", "ui_account"]

_EMPTY: Final = Account(0, b"", SYSTEM_ID, False, 0)
"""What the engine holds for an address a world does not have (LiteSVM reads it as absent)."""
_MISSING: Final = object()
_NO_LOADED_ADDRESSES: Final = UiLoadedAddresses([], [])
_RENT_EXEMPT: Final = 2**64 - 1


def ui_account(account: Account) -> dict[str, Any]:
    """The ``UiAccount`` JSON of an account, data base64-encoded."""
    return {
        "lamports": account.lamports,
        "owner": str(account.owner),
        "data": [base64.b64encode(account.data).decode("ascii"), "base64"],
        "executable": account.executable,
        "rentEpoch": account.rent_epoch,
        "space": len(account.data),
    }


def error_json(err: Any) -> Any:
    """The RPC JSON of a solders ``TransactionError`` (``None`` for none)."""
    if err is None:
        return None
    # solders knows the RPC spelling of every error; it writes it inside a status meta.
    meta = UiTransactionStatusMeta(
        err, 0, [], [], None, None, None, None, None, _NO_LOADED_ADDRESSES, None, None
    )
    return orjson.loads(meta.to_json())["err"]


def account_from_data(data: AccountData) -> Account | None:
    """The solders account an ``AccountData`` describes (``None`` for zero lamports: absent).

    The data is zero-padded to ``space`` when it is shorter (as an allocation would be).
    Raises ``ValueError`` for data that is not base64 or an owner that is not a public key.
    """
    raw = base64.b64decode(data.data, validate=True)
    if data.lamports == 0:
        return None
    if data.space > len(raw):
        raw += bytes(data.space - len(raw))
    return Account(
        data.lamports, raw, Pubkey.from_string(data.owner), data.executable, _RENT_EXEMPT
    )


def _writable_flags(tx: VersionedTransaction) -> tuple[bool, ...]:
    message = tx.message
    header = message.header
    signed = header.num_required_signatures
    count = len(message.account_keys)
    readonly_signed = signed - header.num_readonly_signed_accounts
    readonly_unsigned = count - header.num_readonly_unsigned_accounts
    return tuple(i < readonly_signed or signed <= i < readonly_unsigned for i in range(count))


@final
class World:
    """The accounts one line of execution owns: ``None`` marks an account it deleted."""

    __slots__ = ("accounts", "version")

    def __init__(self, accounts: dict[Pubkey, Account | None]) -> None:
        self.accounts = accounts
        self.version = 0
        """Bumped by every change made outside the engine (so the engine reloads it)."""

    def set(self, key: Pubkey, account: Account | None) -> None:
        """Install an account (``modifyAccounts``): takes effect before anything executes."""
        self.accounts[key] = account
        self.version += 1


@final
class Executed:
    """One executed transaction: its outcome and the real pre/post states of what it wrote.

    The notification JSON is built on first use and cached (most transactions match no
    subscription), and shared by every session that follows the same execution.
    """

    __slots__ = (
        "_diffs",
        "_raw",
        "balances",
        "block_time",
        "err",
        "index",
        "keys",
        "meta",
        "post",
        "pre",
        "programs",
        "signature",
        "slot",
        "transaction",
        "user",
        "writable",
    )

    def __init__(
        self,
        *,
        slot: int,
        index: int,
        block_time: int,
        transaction: VersionedTransaction,
        keys: tuple[Pubkey, ...],
        writable: tuple[bool, ...],
        pre: tuple[Account | None, ...],
        post: tuple[Account | None, ...],
        balances: tuple[tuple[int, ...], tuple[int, ...]],
        err: Any,
        meta: TransactionMetadata,
        user: bool,
    ) -> None:
        self.slot = slot
        self.index = index
        """Position in the slot's execution order (user transactions follow the block's)."""
        self.block_time = block_time
        self.transaction = transaction
        self.signature = str(transaction.signatures[0])
        self.keys = keys
        self.writable = writable
        self.pre = pre
        """States before execution, one per writable key (``None``: absent)."""
        self.post = post
        """States after execution, one per writable key."""
        self.balances = balances
        """Lamports of every account key before and after."""
        self.err = err
        """The solders ``TransactionError`` (``None`` on success)."""
        self.meta = meta
        self.user = user
        """Sent by the session's user (``sendTransaction`` or a continue's transactions)."""
        message = transaction.message
        self.programs = tuple(
            dict.fromkeys(str(keys[ix.program_id_index]) for ix in message.instructions)
        )
        """Programs the instructions invoke, distinct, in order."""
        self._raw: dict[str, Any] | None = None
        self._diffs: tuple[Diff, ...] | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the transaction succeeded."""
        return self.err is None

    def mentions(self, program_id: str) -> bool:
        """Whether a ``transactionSubscribe`` for ``program_id`` receives this transaction."""
        return program_id in self.programs

    @property
    def logs(self) -> list[str]:
        """The log messages."""
        return list(self.meta.logs())

    @property
    def diffs(self) -> tuple[Diff, ...]:
        """The written accounts whose state changed, in account-key order."""
        if self._diffs is None:
            writable_keys = [k for k, w in zip(self.keys, self.writable, strict=True) if w]
            self._diffs = tuple(
                Diff(self, str(key), pre, post)
                for key, pre, post in zip(writable_keys, self.pre, self.post, strict=True)
                if pre != post
            )
        return self._diffs

    @property
    def raw(self) -> dict[str, Any]:
        """The ``getTransaction`` JSON (protocol.md §5); shared: treat it as read-only."""
        if self._raw is None:
            self._raw = self._build_raw()
        return self._raw

    def _build_raw(self) -> dict[str, Any]:
        message = self.transaction.message
        header = message.header
        err = error_json(self.err)
        meta_json = {
            "err": err,
            "status": {"Ok": None} if err is None else {"Err": err},
            "fee": self.meta.fee(),
            "preBalances": list(self.balances[0]),
            "postBalances": list(self.balances[1]),
            "innerInstructions": [],
            "logMessages": list(self.meta.logs()),
            "preTokenBalances": [],
            "postTokenBalances": [],
            "rewards": [],
            "loadedAddresses": {"writable": [], "readonly": []},
            "returnData": None,
            "computeUnitsConsumed": self.meta.compute_units_consumed(),
            "costUnits": None,
        }
        message_json: dict[str, Any] = {
            "header": {
                "numRequiredSignatures": header.num_required_signatures,
                "numReadonlySignedAccounts": header.num_readonly_signed_accounts,
                "numReadonlyUnsignedAccounts": header.num_readonly_unsigned_accounts,
            },
            "accountKeys": [str(key) for key in self.keys],
            "recentBlockhash": str(message.recent_blockhash),
            "instructions": [
                {
                    "programIdIndex": ix.program_id_index,
                    "accounts": list(ix.accounts),
                    "data": base58_encode(ix.data),
                    "stackHeight": None,
                }
                for ix in message.instructions
            ],
        }
        lookups = getattr(message, "address_table_lookups", None)
        version: str | int = "legacy"
        if lookups is not None:
            version = 0
            message_json["addressTableLookups"] = [
                {
                    "accountKey": str(lookup.account_key),
                    "writableIndexes": list(lookup.writable_indexes),
                    "readonlyIndexes": list(lookup.readonly_indexes),
                }
                for lookup in lookups
            ]
        return {
            "slot": self.slot,
            "blockTime": self.block_time,
            "version": version,
            "transaction": {
                "signatures": [str(sig) for sig in self.transaction.signatures],
                "message": message_json,
            },
            "meta": meta_json,
        }

    def status(self) -> dict[str, Any]:
        """The ``getSignatureStatuses`` entry of this transaction."""
        err = self.raw["meta"]["err"]
        return {
            "slot": self.slot,
            "confirmations": None,
            "err": err,
            "status": {"Ok": None} if err is None else {"Err": err},
            "confirmationStatus": "finalized",
        }


@final
class Diff:
    """One changed account of an executed transaction."""

    __slots__ = ("_raw", "account", "executed", "post", "pre")

    def __init__(
        self, executed: Executed, account: str, pre: Account | None, post: Account | None
    ) -> None:
        self.executed = executed
        self.account = account
        self.pre = pre
        self.post = post
        self._raw: dict[str, Any] | None = None

    @property
    def owner(self) -> str:
        """The owning program (after the write; before it for a deleted account)."""
        state = self.post if self.post is not None else self.pre
        assert state is not None  # a diff has a state on at least one side
        return str(state.owner)

    def matches(self, address: str, address_type: str) -> bool:
        """Whether an ``accountDiffSubscribe`` for ``address`` receives this diff."""
        if address_type == "account":
            return self.account == address
        return self.owner == address

    @property
    def raw(self) -> dict[str, Any]:
        """The account-diff notification payload (protocol.md §5); shared, read-only."""
        if self._raw is None:
            executed = self.executed
            self._raw = {
                "context": {"slot": executed.slot, "txIndex": executed.index},
                "account": self.account,
                "signature": executed.signature,
                "pre": None if self.pre is None else ui_account(self.pre),
                "post": None if self.post is None else ui_account(self.post),
            }
        return self._raw


@final
class Simulation:
    """The outcome of a simulation: the JSON of ``simulateTransaction``'s ``value``."""

    __slots__ = ("err", "value")

    def __init__(self, err: Any, value: dict[str, Any]) -> None:
        self.err = err
        self.value = value


_local = threading.local()


class Engine:
    """One LiteSVM, executing on behalf of many worlds."""

    @classmethod
    def shared(cls, ledger: Ledger) -> Engine:
        """The engine of this thread, with ``ledger``'s programs deployed.

        A LiteSVM does not give its memory back when dropped, so every server of a thread
        shares one (Trio runs one thread at a time; each thread gets its own engine).
        Worlds are loaded before every execution, so servers cannot see each other's state.
        """
        engine: Engine | None = getattr(_local, "engine", None)
        if engine is None:
            engine = _local.engine = cls()
        engine.deploy(ledger)
        return engine

    def __init__(self, ledger: Ledger | None = None) -> None:
        """A new engine (prefer :meth:`shared`), with ``ledger``'s programs if given."""
        self._svm = (
            LiteSVM().with_sigverify(False).with_blockhash_check(False).with_transaction_history(0)
        )
        memo = self._svm.get_account(MEMO_ID)
        assert memo is not None  # LiteSVM ships the memo program
        self._memo_elf = bytes(memo.data)
        self._deployed: set[Pubkey] = set()
        self._loaded: World | None = None
        self._loaded_version = -1
        self._held: dict[Pubkey, Account | None] = {}
        """What the engine holds for every address some world set."""
        self._baseline: dict[Pubkey, Account | None] = {}
        """The engine's own value of those addresses, from before any world set them."""
        self._clock_slot = -1
        self.executed = 0
        """Transactions executed so far (statistics)."""
        self.loads = 0
        """World switches so far (statistics)."""
        if ledger is not None:
            self.deploy(ledger)

    def reset(self) -> None:
        """Give every address a world set back to the engine's own value, and forget it.

        A server calls this when it stops, so a shared engine does not carry the addresses
        of servers long gone into every later world switch. Safe at any time: worlds are
        authoritative, and the next execution loads its world in full.
        """
        svm = self._svm
        for key, value in self._held.items():
            original = self._baseline.get(key)
            if value is not original:
                svm.set_account(key, _EMPTY if original is None else original)
        self._held.clear()
        self._baseline.clear()
        self._loaded = None
        self._loaded_version = -1

    def deploy(self, ledger: Ledger) -> None:
        """Deploy ``ledger``'s app programs (copies of the memo program), once each."""
        for program in ledger.app_program_keys():
            if program not in self._deployed:
                self._svm.add_program(program, self._memo_elf)
                self._deployed.add(program)

    # ------------------------------------------------------------ reads

    def baseline(self, key: Pubkey) -> Account | None:
        """The engine's own account at ``key`` (programs, sysvars), outside every world."""
        if key in self._baseline:
            return self._baseline[key]
        if key in self._held:  # pragma: no cover - a held key always has a baseline
            return None
        return self._svm.get_account(key)

    def program_accounts(self, world: World, program: Pubkey) -> list[tuple[Pubkey, Account]]:
        """Accounts owned by ``program`` as ``world`` sees them."""
        self._load(world)
        return list(self._svm.get_program_accounts(program))

    def latest_blockhash(self) -> str:
        """The engine's blockhash (what a transaction's ``recentBlockhash`` may name)."""
        return str(self._svm.latest_blockhash())

    def fee_for(self, world: World, transaction: VersionedTransaction) -> int | None:
        """The fee ``transaction`` would pay in ``world`` (``None`` if it cannot be loaded)."""
        simulation = self._simulate(world, transaction)
        if isinstance(simulation, SimulatedTransactionInfo):
            return int(simulation.meta().fee())
        fee = simulation.meta().fee()
        return int(fee) if fee else None

    # ------------------------------------------------------------ execution

    def execute(
        self,
        world: World,
        transaction: VersionedTransaction,
        *,
        slot: int,
        index: int,
        block_time: int,
        user: bool = False,
    ) -> Executed:
        """Execute ``transaction`` in ``world`` at ``slot`` and write the results back."""
        self._load(world)
        self._set_clock(slot, block_time)
        svm = self._svm
        keys = tuple(transaction.message.account_keys)
        writable = _writable_flags(transaction)
        held = self._held
        baseline = self._baseline
        pre: list[Account | None] = []
        for key, flag in zip(keys, writable, strict=True):
            if flag:
                value = svm.get_account(key)
                if key not in held and key not in baseline:
                    baseline[key] = value
                pre.append(value)
        pre_balances = tuple(svm.get_balance(key) or 0 for key in keys)
        result = svm.send_transaction(transaction)
        post: list[Account | None] = []
        for key, flag in zip(keys, writable, strict=True):
            if flag:
                value = svm.get_account(key)
                held[key] = value
                world.accounts[key] = value
                post.append(value)
        post_balances = tuple(svm.get_balance(key) or 0 for key in keys)
        if isinstance(result, FailedTransactionMetadata):
            err: Any = result.err()
            meta = result.meta()
        else:
            err, meta = None, result
        self.executed += 1
        return Executed(
            slot=slot,
            index=index,
            block_time=block_time,
            transaction=transaction,
            keys=keys,
            writable=writable,
            pre=tuple(pre),
            post=tuple(post),
            balances=(pre_balances, post_balances),
            err=err,
            meta=meta,
            user=user,
        )

    def simulate(
        self, world: World, transaction: VersionedTransaction, *, slot: int, block_time: int
    ) -> Simulation:
        """Simulate ``transaction`` in ``world`` at ``slot``; nothing changes."""
        self._set_clock(slot, block_time)
        simulation = self._simulate(world, transaction)
        if isinstance(simulation, SimulatedTransactionInfo):
            err: Any = None
            meta = simulation.meta()
        else:
            err = simulation.err()
            meta = simulation.meta()
        return Simulation(
            err,
            {
                "err": error_json(err),
                "logs": list(meta.logs()),
                "accounts": None,
                "unitsConsumed": meta.compute_units_consumed(),
                "returnData": None,
                "innerInstructions": None,
                "replacementBlockhash": None,
            },
        )

    def _simulate(
        self, world: World, transaction: VersionedTransaction
    ) -> SimulatedTransactionInfo | FailedTransactionMetadata:
        self._load(world)
        return self._svm.simulate_transaction(transaction)

    # ------------------------------------------------------------ internals

    def _set_clock(self, slot: int, block_time: int) -> None:
        if slot == self._clock_slot:
            return
        self._clock_slot = slot
        self._svm.warp_to_slot(slot)
        self._svm.set_clock(Clock(slot, block_time, 0, 0, block_time))

    def _load(self, world: World) -> None:
        if self._loaded is world and self._loaded_version == world.version:
            return
        svm = self._svm
        held = self._held
        baseline = self._baseline
        accounts = world.accounts
        for key, value in accounts.items():
            current = held.get(key, _MISSING)
            if current is value:
                continue
            if current is _MISSING and key not in baseline:
                baseline[key] = svm.get_account(key)
            svm.set_account(key, _EMPTY if value is None else value)
            held[key] = value
        for key in _not_in(held, accounts):
            value = baseline.get(key)
            if held[key] is not value:
                svm.set_account(key, _EMPTY if value is None else value)
                held[key] = value
        self._loaded = world
        self._loaded_version = world.version
        self.loads += 1


def _not_in(
    held: dict[Pubkey, Account | None], accounts: dict[Pubkey, Account | None]
) -> Iterable[Pubkey]:
    if len(held) == len(accounts):
        return ()
    return [key for key in held if key not in accounts]
