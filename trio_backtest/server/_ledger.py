"""The synthetic ledger's *plan*: deterministic from ``(seed, slot)``.

A slot's plan is the list of real Solana transactions its block holds: system transfers,
SPL Token transfers between token accounts of a seeded mint, memo instructions with seeded
text, compute-budget instructions (priority fees) and calls of synthetic "app" programs
(copies of the memo program deployed under seeded ids). The runtime
(:mod:`._runtime`) executes the plan; every *value* a client sees (lamports, data, logs,
compute units, fees) comes from that execution.

The workload is built so that what the plan promises holds for every world that has not
been changed by its user: a transaction succeeds or fails by construction (failures are a
transfer far beyond any balance, a memo naming an account that did not sign, a token
transfer signed by the wrong authority; successes move small amounts out of enormous
balances), and the set of accounts it writes is fixed. So :attr:`LedgerSlot.diffs` and
:attr:`LedgerTransaction.succeeded` are plan-level facts that tests can use as oracles.

Every slot is generated on demand from a random source seeded with a stable hash of the
ledger seed and the slot number, so slots can be produced in any order and in any process
and always come out byte-identical.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import random
import struct
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final, Literal, TypeVar, final

import attrs
from solders.account import Account
from solders.compute_budget import ID as COMPUTE_BUDGET_ID
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_ID
from solders.system_program import TransferParams, transfer
from solders.token import ID as TOKEN_ID
from solders.transaction import VersionedTransaction

from ..protocol._base58 import base58_decode, base58_encode

_T = TypeVar("_T")

__all__ = [
    "COMPUTE_BUDGET_PROGRAM",
    "MEMO_PROGRAM",
    "SYSTEM_PROGRAM",
    "TOKEN_PROGRAM",
    "Ledger",
    "LedgerAccountDiff",
    "LedgerConfig",
    "LedgerSlot",
    "LedgerTransaction",
    "TransactionKind",
    "base58_decode",
    "base58_encode",
]

MEMO_ID: Final = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SYSTEM_PROGRAM: Final = str(SYSTEM_ID)
TOKEN_PROGRAM: Final = str(TOKEN_ID)
MEMO_PROGRAM: Final = str(MEMO_ID)
COMPUTE_BUDGET_PROGRAM: Final = str(COMPUTE_BUDGET_ID)

TransactionKind = Literal["transfer", "token", "app", "memo"]


def _stable_seed(*parts: int | str) -> int:
    """Seed material that is the same in every process (unlike the salted ``hash()``)."""
    text = ":".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=16).digest(), "big")


@final
@attrs.frozen
class LedgerConfig:
    """Parameters of a synthetic ledger; the same config always yields the same ledger."""

    seed: int = 0
    """Root of all randomness in the ledger."""
    transactions_per_slot: float = 20.0
    """Mean number of block transactions per slot (Poisson distributed); 0 gives empty slots."""
    program_count: int = 8
    """How many synthetic "app" programs (memo-program copies under seeded ids) exist, next to
    the System, SPL Token, Memo and Compute Budget programs the workload also invokes."""
    account_count: int = 64
    """How many SPL token accounts of the ledger's mint exist (owned by the signer wallets)."""
    bundle_size: int = 100
    """Slots per bundle: parallel splits and world snapshots (a session's world starts from
    the genesis snapshot at the start of its first slot's bundle)."""
    failure_rate: float = 0.08
    """Probability that a block transaction fails by construction; a failed transaction
    still pays its fee, so its only account diff is its fee payer's."""

    def __attrs_post_init__(self) -> None:
        if not (math.isfinite(self.transactions_per_slot) and self.transactions_per_slot >= 0):
            raise ValueError("transactions_per_slot must be a finite number >= 0")
        if self.program_count < 1:
            raise ValueError("program_count must be >= 1")
        if self.account_count < 1:
            raise ValueError("account_count must be >= 1")
        if self.bundle_size < 1:
            raise ValueError("bundle_size must be >= 1")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be within [0, 1]")


@final
@attrs.frozen
class LedgerTransaction:
    """One planned block transaction: what it is, not what executing it produced."""

    slot: int
    """Slot of the block holding the transaction."""
    index: int
    """Position in the slot's execution order, 0-based (the ``batchIndex`` of its batch)."""
    signature: str
    """Base58 of its (synthetic, 64 random bytes) signature: the transaction's identity."""
    kind: TransactionKind
    """The main instruction: a system transfer, a token transfer, an app call or a memo."""
    programs: tuple[str, ...]
    """The programs its instructions invoke, distinct, in instruction order."""
    accounts: tuple[str, ...]
    """The accounts it writes (attempts to write, if it fails) besides its fee payer, in the
    order of the message's account keys."""
    succeeded: bool
    """Whether it succeeds in every world its user did not change."""
    fee_payer: str
    """The signing wallet that pays the fee (it also signs the main instruction)."""
    transaction: VersionedTransaction = attrs.field(eq=False, repr=False)
    """The transaction itself (signature verification is off, so any signature runs)."""

    def mentions(self, program_id: str) -> bool:
        """Whether a ``transactionSubscribe`` for ``program_id`` receives this transaction."""
        return program_id in self.programs

    @property
    def writes(self) -> tuple[str, ...]:
        """The accounts its execution changes: the fee payer, then (on success) the others."""
        return (self.fee_payer, *self.accounts) if self.succeeded else (self.fee_payer,)

    @functools.cached_property
    def wire(self) -> str:
        """Base64 of the bincode-serialized ``VersionedTransaction``."""
        return base64.b64encode(bytes(self.transaction)).decode("ascii")


@final
@attrs.frozen
class LedgerAccountDiff:
    """One planned account write: which account a transaction changes (values come from
    execution)."""

    slot: int
    """Slot of the writing transaction."""
    tx_index: int
    """Index of the writing transaction within its slot."""
    signature: str
    """Signature of the writing transaction."""
    account: str
    """The written account."""
    owner: str
    """The program owning the account."""

    def matches(self, address: str, address_type: str) -> bool:
        """Whether an ``accountDiffSubscribe`` for ``address`` receives this diff.

        Raises:
            ValueError: ``address_type`` is neither ``"program"`` nor ``"account"``.
        """
        if address_type == "account":
            return self.account == address
        if address_type == "program":
            return self.owner == address
        raise ValueError(f"unknown address_type {address_type!r}")


@final
@attrs.frozen
class LedgerSlot:
    """Everything one slot's block plans, in execution order."""

    slot: int
    """The slot number."""
    blockhash: str
    """The block's blockhash (base58)."""
    block_time: int
    """The block's Unix time."""
    transactions: tuple[LedgerTransaction, ...]
    """Transactions by index."""
    diffs: tuple[LedgerAccountDiff, ...]
    """Account writes by transaction index, then the message's account-key order."""


_GENESIS_BLOCK_TIME: Final = 1_700_000_000
_RENT_EPOCH_EXEMPT: Final = 2**64 - 1
_WALLET_COUNT: Final = 16
_WALLET_LAMPORTS: Final = 10**15
_TOKEN_AMOUNT: Final = 10**12
_TOKEN_DECIMALS: Final = 6
_IMPOSSIBLE_LAMPORTS: Final = 2**62
"""A transfer of this many lamports fails in every world: more than all wallets hold."""
_NEW_ACCOUNT_LAMPORTS: Final = (1_000_000, 5_000_000)
"""A transfer that creates an account moves at least the rent-exempt minimum (890,880)."""
_CREATE_RATE: Final = 0.03
_PRIORITY_FEE_RATE: Final = 0.7
_NOTE_RATE: Final = 0.6
_KIND_WEIGHTS: Final[tuple[tuple[TransactionKind, float], ...]] = (
    ("transfer", 0.3),
    ("token", 0.3),
    ("app", 0.3),
    ("memo", 0.1),
)
_MEMO_LENGTH: Final = (40, 520)
_NOTE_LENGTH: Final = (20, 200)
_WORDS: Final = (
    "swap",
    "route",
    "filled",
    "order",
    "cancel",
    "settle",
    "crank",
    "oracle",
    "price",
    "vault",
    "deposit",
    "withdraw",
    "rebalance",
    "harvest",
    "stake",
    "unstake",
    "claim",
    "reward",
    "pool",
    "liquidity",
    "slippage",
    "bid",
    "ask",
    "spread",
    "tick",
    "market",
    "limit",
    "taker",
    "maker",
    "fee",
    "rebate",
    "epoch",
    "bundle",
    "leader",
    "arb",
)
_TOKEN_TRANSFER: Final = 3
_CORPUS_SIZE: Final = 64 * 1024


@final
class _Draw:
    """A seeded random source; float-based draws are several times cheaper than randrange."""

    __slots__ = ("gauss", "randbytes", "random")

    def __init__(self, seed: int) -> None:
        source = random.Random(seed)
        self.random = source.random
        self.randbytes = source.randbytes
        self.gauss = source.gauss

    def below(self, bound: int) -> int:
        return int(self.random() * bound)

    def between(self, low: int, high: int) -> int:
        """An int in ``[low, high)``."""
        return low + int(self.random() * (high - low))

    def pick(self, options: Sequence[_T]) -> _T:
        return options[int(self.random() * len(options))]

    def text(self, length: int) -> bytes:
        """Seeded text of ``length`` bytes (ASCII words and numbers)."""
        parts: list[str] = []
        size = 0
        while size < length:
            word = self.pick(_WORDS) if self.random() < 0.75 else str(self.below(1_000_000))
            parts.append(word)
            size += len(word) + 1
        return " ".join(parts)[:length].encode()


def _poisson(rng: _Draw, mean: float) -> int:
    if mean > 500:
        # Knuth's method costs O(mean) draws and exp(-mean) underflows near 745; the normal
        # approximation is indistinguishable at this size.
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _token_account_data(mint: Pubkey, owner: Pubkey, amount: int) -> bytes:
    """An initialized SPL Token account (the 165-byte ``Account`` layout)."""
    return (
        bytes(mint)
        + bytes(owner)
        + struct.pack("<Q", amount)
        + bytes(36)  # delegate: none
        + b"\x01"  # state: initialized
        + bytes(12)  # is_native: none
        + struct.pack("<Q", 0)  # delegated amount
        + bytes(36)  # close authority: none
    )


def _mint_data(supply: int) -> bytes:
    """An initialized SPL Token mint without authorities (the 82-byte ``Mint`` layout)."""
    return bytes(36) + struct.pack("<QB?", supply, _TOKEN_DECIMALS, True) + bytes(36)


def _token_transfer(
    source: Pubkey, destination: Pubkey, authority: Pubkey, amount: int
) -> Instruction:
    return Instruction(
        TOKEN_ID,
        struct.pack("<BQ", _TOKEN_TRANSFER, amount),
        [
            AccountMeta(source, is_signer=False, is_writable=True),
            AccountMeta(destination, is_signer=False, is_writable=True),
            AccountMeta(authority, is_signer=True, is_writable=False),
        ],
    )


class Ledger:
    """A deterministic synthetic ledger: ``slot(n)`` is a pure function of ``(config, n)``."""

    config: LedgerConfig
    """The configuration the ledger was built from."""
    programs: tuple[str, ...]
    """Every program the workload invokes: SPL Token, System, Memo, the app programs, then
    Compute Budget."""
    app_programs: tuple[str, ...]
    """The synthetic app programs (copies of the memo program under seeded ids)."""
    accounts: tuple[str, ...]
    """The accounts the workload writes at genesis: the token accounts, then the wallets."""
    wallets: tuple[str, ...]
    """Fee-paying signer wallets (System-owned)."""
    token_accounts: tuple[str, ...]
    """SPL token accounts of :attr:`mint` (Token-owned)."""
    mint: str
    """The SPL Token mint of the token accounts."""

    def __init__(
        self,
        config: LedgerConfig | None = None,
        *,
        cache_slots: int = 64,
        cache_transactions: int = 1024,
    ) -> None:
        """Build the key sets of ``config``.

        Args:
            config: Ledger parameters; the defaults when None.
            cache_slots: Most slots kept in the memo of recently generated slots.
            cache_transactions: Most transactions kept in that memo (the latest slot is always
                kept), which bounds memory for firehose profiles.
        """
        self.config = config if config is not None else LedgerConfig()
        if cache_slots < 1 or cache_transactions < 0:
            raise ValueError("cache_slots must be >= 1 and cache_transactions >= 0")
        self._cache_slots = cache_slots
        self._cache_transactions = cache_transactions
        self._cache: OrderedDict[int, LedgerSlot] = OrderedDict()
        self._cached_transactions = 0

        keys = _Draw(_stable_seed(self.config.seed, "keys"))
        self._apps = [Pubkey(keys.randbytes(32)) for _ in range(self.config.program_count)]
        self._wallets = [Pubkey(keys.randbytes(32)) for _ in range(_WALLET_COUNT)]
        self._mint = Pubkey(keys.randbytes(32))
        self._tokens = [Pubkey(keys.randbytes(32)) for _ in range(self.config.account_count)]
        # Token account i belongs to wallet i mod 16, so every wallet owns one when there are
        # enough of them.
        self._token_owner = [self._wallets[i % _WALLET_COUNT] for i in range(len(self._tokens))]
        self._tokens_of: dict[Pubkey, list[int]] = {}
        for i, owner in enumerate(self._token_owner):
            self._tokens_of.setdefault(owner, []).append(i)

        self.app_programs = tuple(str(key) for key in self._apps)
        self.programs = (
            TOKEN_PROGRAM,
            SYSTEM_PROGRAM,
            MEMO_PROGRAM,
            *self.app_programs,
            COMPUTE_BUDGET_PROGRAM,
        )
        self.wallets = tuple(str(key) for key in self._wallets)
        self.token_accounts = tuple(str(key) for key in self._tokens)
        self.mint = str(self._mint)
        self.accounts = (*self.token_accounts, *self.wallets)
        # Memo texts are slices of one seeded corpus: drawing words per memo would cost more
        # than executing the transaction.
        self._corpus = keys.text(_CORPUS_SIZE)
        self._owner = {account: TOKEN_PROGRAM for account in self.token_accounts}
        self._owner.update({wallet: SYSTEM_PROGRAM for wallet in self.wallets})
        self._owner[self.mint] = TOKEN_PROGRAM

    def owner_of(self, account: str) -> str:
        """The program owning a ledger account (created accounts are System-owned).

        Raises:
            KeyError: ``account`` is neither one of :attr:`accounts` nor the mint.
        """
        return self._owner[account]

    def genesis(self) -> dict[Pubkey, Account]:
        """The accounts every bundle's snapshot starts from (programs live in the runtime)."""
        accounts: dict[Pubkey, Account] = {}
        system = SYSTEM_ID
        for wallet in self._wallets:
            accounts[wallet] = Account(_WALLET_LAMPORTS, b"", system, False, _RENT_EPOCH_EXEMPT)
        supply = _TOKEN_AMOUNT * len(self._tokens)
        accounts[self._mint] = Account(
            1_461_600, _mint_data(supply), TOKEN_ID, False, _RENT_EPOCH_EXEMPT
        )
        for token, owner in zip(self._tokens, self._token_owner, strict=True):
            data = _token_account_data(self._mint, owner, _TOKEN_AMOUNT)
            accounts[token] = Account(2_039_280, data, TOKEN_ID, False, _RENT_EPOCH_EXEMPT)
        return accounts

    def app_program_keys(self) -> tuple[Pubkey, ...]:
        """The app program ids, as keys to deploy the memo program under."""
        return tuple(self._apps)

    def bundle_start(self, slot: int) -> int:
        """The first slot of the bundle holding ``slot``."""
        return slot - slot % self.config.bundle_size

    def slot(self, slot: int) -> LedgerSlot:
        """The planned transactions and account writes of ``slot``.

        Raises:
            ValueError: ``slot`` is negative.
        """
        if slot < 0:
            raise ValueError("slot must be >= 0")
        cached = self._cache.get(slot)
        if cached is not None:
            self._cache.move_to_end(slot)
            return cached
        generated = self._generate(slot)
        self._cache[slot] = generated
        self._cached_transactions += len(generated.transactions)
        while len(self._cache) > 1 and (
            len(self._cache) > self._cache_slots
            or self._cached_transactions > self._cache_transactions
        ):
            _, evicted = self._cache.popitem(last=False)
            self._cached_transactions -= len(evicted.transactions)
        return generated

    def bundles(self, start: int, end: int) -> list[tuple[int, int]]:
        """Split the inclusive slot range ``[start, end]`` at multiples of ``bundle_size``.

        Returns:
            Inclusive ``(first, last)`` pairs covering the range in order.

        Raises:
            ValueError: ``start`` is negative or greater than ``end``.
        """
        if start < 0 or start > end:
            raise ValueError(f"invalid slot range [{start}, {end}]")
        size = self.config.bundle_size
        result: list[tuple[int, int]] = []
        first = start
        while first <= end:
            last = min(end, (first // size + 1) * size - 1)
            result.append((first, last))
            first = last + 1
        return result

    def _generate(self, slot: int) -> LedgerSlot:
        rng = _Draw(_stable_seed(self.config.seed, "slot", slot))
        count = _poisson(rng, self.config.transactions_per_slot)
        blockhash = Hash(rng.randbytes(32))
        transactions = tuple(
            self._transaction(rng, slot, index, blockhash) for index in range(count)
        )
        diffs = tuple(
            LedgerAccountDiff(slot, tx.index, tx.signature, account, self._owner_or_system(account))
            for tx in transactions
            for account in tx.writes
        )
        return LedgerSlot(
            slot=slot,
            blockhash=str(blockhash),
            block_time=_GENESIS_BLOCK_TIME + slot * 2 // 5,
            transactions=transactions,
            diffs=diffs,
        )

    def _owner_or_system(self, account: str) -> str:
        return self._owner.get(account, SYSTEM_PROGRAM)

    def _transaction(self, rng: _Draw, slot: int, index: int, blockhash: Hash) -> LedgerTransaction:
        payer = rng.pick(self._wallets)
        failed = rng.random() < self.config.failure_rate
        roll = rng.random()
        kind: TransactionKind = "memo"
        for candidate, weight in _KIND_WEIGHTS:
            if roll < weight:
                kind = candidate
                break
            roll -= weight
        if kind == "token" and not self._token_transfer_possible(payer, failed):
            kind = "transfer"
        instructions: list[Instruction] = []
        if rng.random() < _PRIORITY_FEE_RATE:
            instructions.append(set_compute_unit_limit(rng.between(50_000, 400_000)))
            instructions.append(set_compute_unit_price(rng.between(1, 200_000)))
        writes: list[Pubkey] = []
        if kind == "transfer":
            instructions.append(self._transfer(rng, payer, failed, writes))
        elif kind == "token":
            instructions.append(self._token(rng, payer, failed, writes))
        else:
            program = MEMO_ID if kind == "memo" else rng.pick(self._apps)
            instructions.append(self._memo(rng, program, payer, failed, _MEMO_LENGTH))
        if kind in ("transfer", "token") and rng.random() < _NOTE_RATE:
            program = MEMO_ID if rng.random() < 0.5 else rng.pick(self._apps)
            instructions.append(self._memo(rng, program, payer, False, _NOTE_LENGTH))
        signature = Signature(rng.randbytes(64))
        message = Message.new_with_blockhash(instructions, payer, blockhash)
        transaction = VersionedTransaction.populate(message, [signature])
        keys = message.account_keys
        programs = tuple(
            dict.fromkeys(str(keys[ix.program_id_index]) for ix in message.instructions)
        )
        written = set(writes)
        accounts = tuple(str(key) for key in keys if key in written)
        return LedgerTransaction(
            slot=slot,
            index=index,
            signature=str(signature),
            kind=kind,
            programs=programs,
            accounts=accounts,
            succeeded=not failed,
            fee_payer=str(payer),
            transaction=transaction,
        )

    def _token_transfer_possible(self, payer: Pubkey, failed: bool) -> bool:
        if len(self._tokens) < 2:
            return False
        owned = len(self._tokens_of.get(payer, ()))
        return owned < len(self._tokens) if failed else owned > 0

    def _transfer(
        self, rng: _Draw, payer: Pubkey, failed: bool, writes: list[Pubkey]
    ) -> Instruction:
        if rng.random() < _CREATE_RATE:
            # A fresh address: the transfer creates a System account (its diff has no pre).
            to = Pubkey(rng.randbytes(32))
            amount = rng.between(*_NEW_ACCOUNT_LAMPORTS)
        else:
            to = rng.pick(self._wallets)
            while to == payer:
                to = rng.pick(self._wallets)
            amount = rng.between(1, 1_000_000)
        if failed:
            amount = _IMPOSSIBLE_LAMPORTS
        writes.append(to)
        return transfer(TransferParams(from_pubkey=payer, to_pubkey=to, lamports=amount))

    def _token(self, rng: _Draw, payer: Pubkey, failed: bool, writes: list[Pubkey]) -> Instruction:
        owned = self._tokens_of.get(payer, [])
        if failed:
            # Signed by the payer, but the source belongs to another wallet: OwnerMismatch.
            others = [i for i in range(len(self._tokens)) if i not in owned]
            source = rng.pick(others)
        else:
            source = rng.pick(owned)
        destination = rng.below(len(self._tokens))
        while destination == source:
            destination = rng.below(len(self._tokens))
        src, dst = self._tokens[source], self._tokens[destination]
        writes.extend((src, dst))
        return _token_transfer(src, dst, payer, rng.between(1, 1_000_000))

    def _memo(
        self, rng: _Draw, program: Pubkey, payer: Pubkey, failed: bool, length: tuple[int, int]
    ) -> Instruction:
        size = rng.between(*length)
        at = rng.below(len(self._corpus) - size)
        text = self._corpus[at : at + size]
        metas = [AccountMeta(payer, is_signer=True, is_writable=True)]
        if failed:
            # The memo program requires every named account to sign: this one did not.
            other = rng.pick(self._wallets)
            while other == payer:
                other = rng.pick(self._wallets)
            metas.append(AccountMeta(other, is_signer=False, is_writable=False))
        return Instruction(program, text, metas)
