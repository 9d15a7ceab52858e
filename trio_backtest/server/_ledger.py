"""The synthetic ledger the local server executes: deterministic from ``(seed, slot)``.

Every slot is generated on demand from a random source seeded with a stable hash of the
ledger seed and the slot number, so slots can be produced in any order, in parallel bundles,
in any process, and always come out byte-identical. Account state is consistent *within* a
slot (a second write to an account starts from the first write's ``post``); across slots each
slot starts from freshly drawn state, which keeps random access O(1).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeVar, final

import attrs
import orjson

from ..protocol._base58 import base58_decode, base58_encode

_T = TypeVar("_T")

__all__ = [
    "Ledger",
    "LedgerAccountDiff",
    "LedgerConfig",
    "LedgerSlot",
    "LedgerTransaction",
    "base58_decode",
    "base58_encode",
]


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
    """Mean number of transactions per slot (Poisson distributed per slot); 0 gives empty slots."""
    program_count: int = 8
    """How many program ids exist."""
    account_count: int = 64
    """How many program-owned accounts exist."""
    bundle_size: int = 100
    """Slots per bundle when a range is split for parallel execution."""
    failure_rate: float = 0.08
    """Probability that a transaction fails; failed transactions write no account diffs."""

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
    """One executed transaction of the synthetic ledger.

    The identity fields are computed with the slot; ``raw``, ``raw_json`` and ``wire`` are
    built on first access (from a random source fixed when the slot was generated), because
    most transactions of a slot usually match no subscription. ``raw`` is shared with the
    ledger's cache: treat it as read-only.
    """

    slot: int
    """Slot the transaction executed in."""
    index: int
    """Position in the slot's execution order, 0-based."""
    signature: str
    """Base58 of 64 bytes; equal to ``raw["transaction"]["signatures"][0]``."""
    programs: tuple[str, ...]
    """The 1-3 ledger program ids the transaction invokes, in instruction order."""
    accounts: tuple[str, ...]
    """The 1-4 program-owned accounts it writes (attempts to write, if it failed)."""
    succeeded: bool
    """False when ``raw["meta"]["err"]`` is set."""
    fee_payer: str
    """The signing wallet that paid the fee (not a ledger account, so it has no diffs)."""
    _recipe: _TransactionRecipe = attrs.field(eq=False, repr=False, alias="recipe")

    def mentions(self, program_id: str) -> bool:
        """Whether a ``transactionSubscribe`` for ``program_id`` receives this transaction."""
        return program_id in self.programs

    @property
    def raw(self) -> Mapping[str, Any]:
        """The ``getTransaction`` JSON shape of protocol.md section 5 (1-3 KB as JSON)."""
        return self._materialized.raw

    @property
    def raw_json(self) -> bytes:
        """``orjson.dumps(raw)``, computed anyway while sizing ``raw``."""
        return self._materialized.raw_json

    @property
    def wire(self) -> str:
        """Base64 of the transaction in Solana's legacy wire format (synthetic signature)."""
        return self._materialized.wire

    @functools.cached_property
    def _materialized(self) -> _Materialized:
        return self._recipe.materialize(self.slot, self.signature, self.programs)


@final
@attrs.frozen
class LedgerAccountDiff:
    """One account write of a successful transaction.

    ``raw`` is shared with the ledger's cache: treat it as read-only.
    """

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
    raw: Mapping[str, Any] = attrs.field(hash=False, repr=False)
    """``{"context": {"slot", "txIndex"}, "account", "signature", "pre", "post"}``."""

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
    """Everything one slot executes, in execution order."""

    slot: int
    """The slot number."""
    transactions: tuple[LedgerTransaction, ...]
    """Transactions by index."""
    diffs: tuple[LedgerAccountDiff, ...]
    """Account diffs by transaction index, then write order within the transaction."""


_GENESIS_BLOCK_TIME: Final = 1_700_000_000
_RENT_EPOCH_EXEMPT: Final = 2**64 - 1
_PROGRAM_LAMPORTS: Final = 1_141_440
_WALLET_COUNT: Final = 16
_CU_PER_INSTRUCTION: Final = 200_000
_SIZE_TARGET: Final = (1100, 2900)
_PAD_LINE_CHARS: Final = 300
_PAD_LINE_OVERHEAD: Final = len('"Program data: ",')
_ACCOUNT_SPACES: Final = (8, 40, 82, 120, 165, 200)
_PROGRAM_COUNTS: Final = (1, 1, 1, 2, 2, 3)
_ACCOUNT_COUNTS: Final = (1, 1, 2, 2, 3, 4)
_CREATE_RATE: Final = 0.04
_DELETE_RATE: Final = 0.03
_PRIORITY_FEE_RATE: Final = 0.7
_INSTRUCTION_NAMES: Final = (
    "Transfer",
    "Swap",
    "Deposit",
    "Withdraw",
    "Initialize",
    "CloseAccount",
    "PlaceOrder",
    "CancelOrder",
    "Route",
    "SetAuthority",
    "MintTo",
    "Burn",
    "UpdatePrice",
    "Crank",
    "Settle",
)
_ERROR_MESSAGES: Final = (
    "slippage tolerance exceeded",
    "insufficient funds",
    "account not initialized",
    "stale oracle price",
    "order would self-trade",
    "invalid authority",
)


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


_SMALL_BYTES: Final = tuple(bytes((i,)) for i in range(0x80))


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


def _compact_u16(value: int) -> bytes:
    if value < 0x80:
        return _SMALL_BYTES[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _ui_account(lamports: int, owner: str, data: bytes) -> dict[str, Any]:
    return {
        "lamports": lamports,
        "owner": owner,
        "data": [base64.b64encode(data).decode("ascii"), "base64"],
        "executable": False,
        "rentEpoch": _RENT_EPOCH_EXEMPT,
        "space": len(data),
    }


@final
@attrs.define
class _AccountState:
    """State of one account while its slot is being generated."""

    lamports: int
    data: bytes
    ui: dict[str, Any]


@final
@attrs.frozen
class _Materialized:
    raw: dict[str, Any]
    raw_json: bytes
    wire: str


@final
@attrs.frozen
class _TransactionRecipe:
    """What a transaction's JSON and wire bytes are built from, fixed at slot generation."""

    seed: int
    block_time: int
    blockhash: str
    blockhash_bytes: bytes
    signature_bytes: bytes
    keys: tuple[str, ...]
    """Fee payer, written accounts, programs: signer-writable, writable, read-only."""
    key_bytes: tuple[bytes, ...]
    instruction_accounts: tuple[tuple[int, ...], ...]
    """Per program, the key indices its instruction names."""
    failed_at: int | None
    """Index of the failing instruction; the ones after it do not run."""
    fee: int
    pre_balances: tuple[int, ...]
    post_balances: tuple[int, ...]

    def materialize(self, slot: int, signature: str, programs: tuple[str, ...]) -> _Materialized:
        rng = _Draw(self.seed)
        first_program = len(self.keys) - len(programs)
        limit = _CU_PER_INSTRUCTION * len(programs)
        consumed_total = 0
        logs: list[str] = []
        instructions: list[dict[str, Any]] = []
        wire_instructions = bytearray(_compact_u16(len(programs)))
        err: dict[str, Any] | None = None
        for position, program in enumerate(programs):
            accounts = self.instruction_accounts[position]
            data = rng.randbytes(rng.between(1, 41))
            instructions.append(
                {
                    "programIdIndex": first_program + position,
                    "accounts": list(accounts),
                    "data": base58_encode(data),
                    "stackHeight": None,
                }
            )
            wire_instructions.append(first_program + position)
            wire_instructions += _compact_u16(len(accounts))
            wire_instructions += bytes(accounts)
            wire_instructions += _compact_u16(len(data))
            wire_instructions += data
            if err is not None:
                continue
            consumed = rng.between(2_000, 120_000)
            logs.append(f"Program {program} invoke [1]")
            logs.append(f"Program log: Instruction: {rng.pick(_INSTRUCTION_NAMES)}")
            if position == self.failed_at:
                code = rng.between(0x1770, 0x17A0)
                logs.append(f"Program log: Error: {rng.pick(_ERROR_MESSAGES)}")
            logs.append(
                f"Program {program} consumed {consumed} of {limit - consumed_total} compute units"
            )
            if position == self.failed_at:
                logs.append(f"Program {program} failed: custom program error: {code:#x}")
                err = {"InstructionError": [position, {"Custom": code}]}
            else:
                logs.append(f"Program {program} success")
            consumed_total += consumed

        raw: dict[str, Any] = {
            "slot": slot,
            "blockTime": self.block_time,
            "version": "legacy",
            "transaction": {
                "signatures": [signature],
                "message": {
                    "header": {
                        "numRequiredSignatures": 1,
                        "numReadonlySignedAccounts": 0,
                        "numReadonlyUnsignedAccounts": len(programs),
                    },
                    "accountKeys": list(self.keys),
                    "recentBlockhash": self.blockhash,
                    "instructions": instructions,
                },
            },
            "meta": {
                "err": err,
                "status": {"Ok": None} if err is None else {"Err": err},
                "fee": self.fee,
                "preBalances": list(self.pre_balances),
                "postBalances": list(self.post_balances),
                "innerInstructions": [],
                "logMessages": logs,
                "preTokenBalances": [],
                "postTokenBalances": [],
                "rewards": [],
                "loadedAddresses": {"writable": [], "readonly": []},
                "computeUnitsConsumed": consumed_total,
            },
        }
        raw_json = orjson.dumps(raw)
        missing = rng.between(*_SIZE_TARGET) - len(raw_json)
        if missing > 2 * _PAD_LINE_OVERHEAD:
            # Anchor-style event lines: realistic filler up to a realistic size.
            lines = -(-missing // (_PAD_LINE_CHARS + _PAD_LINE_OVERHEAD))
            chars = (missing - lines * _PAD_LINE_OVERHEAD) // 4 * 4
            blob = base64.b64encode(rng.randbytes(chars // 4 * 3)).decode("ascii")
            logs[2:2] = [
                "Program data: " + blob[at : at + _PAD_LINE_CHARS]
                for at in range(0, len(blob), _PAD_LINE_CHARS)
            ]
            raw_json = orjson.dumps(raw)

        wire = b"".join(
            (
                _compact_u16(1),
                self.signature_bytes,
                bytes((1, 0, len(programs))),
                _compact_u16(len(self.keys)),
                *self.key_bytes,
                self.blockhash_bytes,
                wire_instructions,
            )
        )
        return _Materialized(raw, raw_json, base64.b64encode(wire).decode("ascii"))


class Ledger:
    """A deterministic synthetic ledger: ``slot(n)`` is a pure function of ``(config, n)``."""

    config: LedgerConfig
    """The configuration the ledger was built from."""
    programs: tuple[str, ...]
    """Program ids (base58 32-byte keys)."""
    accounts: tuple[str, ...]
    """Program-owned accounts (base58 32-byte keys)."""
    wallets: tuple[str, ...]
    """Fee-paying signer wallets (base58 32-byte keys)."""

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
        program_bytes = [keys.randbytes(32) for _ in range(self.config.program_count)]
        account_bytes = [keys.randbytes(32) for _ in range(self.config.account_count)]
        wallet_bytes = [keys.randbytes(32) for _ in range(_WALLET_COUNT)]
        self.programs = tuple(base58_encode(key) for key in program_bytes)
        self.accounts = tuple(base58_encode(key) for key in account_bytes)
        self.wallets = tuple(base58_encode(key) for key in wallet_bytes)
        self._key_bytes = dict(
            zip(
                self.programs + self.accounts + self.wallets,
                program_bytes + account_bytes + wallet_bytes,
                strict=True,
            )
        )
        # The first accounts go round-robin so every program owns one when there are enough.
        owner_index = [
            i if i < self.config.program_count else keys.below(self.config.program_count)
            for i in range(self.config.account_count)
        ]
        self._owner = {
            account: self.programs[owner_index[i]] for i, account in enumerate(self.accounts)
        }
        self._space = {account: keys.pick(_ACCOUNT_SPACES) for account in self.accounts}
        owned: list[list[str]] = [[] for _ in self.programs]
        for i, account in enumerate(self.accounts):
            owned[owner_index[i]].append(account)
        self._owned = tuple(tuple(accounts) for accounts in owned)
        self._owning_programs = tuple(i for i, accounts in enumerate(self._owned) if accounts)

    def owner_of(self, account: str) -> str:
        """The program owning a ledger account.

        Raises:
            KeyError: ``account`` is not one of :attr:`accounts`.
        """
        return self._owner[account]

    def slot(self, slot: int) -> LedgerSlot:
        """The transactions and account diffs of ``slot``.

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
        blockhash_bytes = rng.randbytes(32)
        generation = _SlotGeneration(
            ledger=self,
            rng=rng,
            slot=slot,
            block_time=_GENESIS_BLOCK_TIME + slot * 2 // 5,
            blockhash=base58_encode(blockhash_bytes),
            blockhash_bytes=blockhash_bytes,
        )
        transactions = tuple(generation.transaction(index) for index in range(count))
        return LedgerSlot(slot=slot, transactions=transactions, diffs=tuple(generation.diffs))


@final
@attrs.define
class _SlotGeneration:
    """The running state of generating one slot: account states chain through its writes."""

    ledger: Ledger
    rng: _Draw
    slot: int
    block_time: int
    blockhash: str
    blockhash_bytes: bytes
    accounts: dict[str, _AccountState | None] = attrs.Factory(dict)
    wallets: dict[str, int] = attrs.Factory(dict)
    diffs: list[LedgerAccountDiff] = attrs.Factory(list)

    def transaction(self, index: int) -> LedgerTransaction:
        ledger = self.ledger
        rng = self.rng
        all_programs = ledger.programs
        owner = ledger._owner
        owned = ledger._owned
        # The first program owns accounts, so the transaction always has something to write.
        first = rng.pick(ledger._owning_programs)
        program_count = min(rng.pick(_PROGRAM_COUNTS), len(all_programs))
        chosen = [first]
        while len(chosen) < program_count:
            candidate = rng.below(len(all_programs))
            if candidate not in chosen:
                chosen.append(candidate)
        programs = tuple(all_programs[i] for i in chosen)
        pool = owned[first] if program_count == 1 else [a for i in chosen for a in owned[i]]
        written_count = min(rng.pick(_ACCOUNT_COUNTS), len(pool))
        written: list[str] = []
        while len(written) < written_count:
            account = rng.pick(pool)
            if account not in written:
                written.append(account)

        payer = rng.pick(ledger.wallets)
        signature_bytes = rng.randbytes(64)
        signature = base58_encode(signature_bytes)
        failed = rng.random() < ledger.config.failure_rate
        failed_at = rng.below(program_count) if failed else None
        fee = 5_000 + (rng.between(1, 80_000) if rng.random() < _PRIORITY_FEE_RATE else 0)
        seed = int(rng.random() * 2**53)

        payer_pre = self.wallets.get(payer)
        if payer_pre is None:
            payer_pre = rng.between(100_000_000, 100_000_000_000)
        payer_post = max(0, payer_pre - fee)
        self.wallets[payer] = payer_post
        pre_balances = [payer_pre]
        post_balances = [payer_post]
        for account in written:
            pre = self._state(account)
            pre_balances.append(pre.lamports if pre is not None else 0)
            if failed:
                # A failed transaction's writes are rolled back: no diff, balance unchanged.
                post_balances.append(pre_balances[-1])
                continue
            post = self._write(account, pre)
            self.accounts[account] = post
            post_balances.append(post.lamports if post is not None else 0)
            self.diffs.append(
                LedgerAccountDiff(
                    slot=self.slot,
                    tx_index=index,
                    signature=signature,
                    account=account,
                    owner=owner[account],
                    raw={
                        "context": {"slot": self.slot, "txIndex": index},
                        "account": account,
                        "signature": signature,
                        "pre": pre.ui if pre is not None else None,
                        "post": post.ui if post is not None else None,
                    },
                )
            )
        pre_balances.extend(_PROGRAM_LAMPORTS for _ in programs)
        post_balances.extend(_PROGRAM_LAMPORTS for _ in programs)

        keys = (payer, *written, *programs)
        key_bytes = ledger._key_bytes
        # Key index of written account i is i + 1 (the fee payer is key 0).
        instruction_accounts = tuple(
            (0, *(i + 1 for i, account in enumerate(written) if owner[account] == program))
            for program in programs
        )
        return LedgerTransaction(
            slot=self.slot,
            index=index,
            signature=signature,
            programs=programs,
            accounts=tuple(written),
            succeeded=not failed,
            fee_payer=payer,
            recipe=_TransactionRecipe(
                seed=seed,
                block_time=self.block_time,
                blockhash=self.blockhash,
                blockhash_bytes=self.blockhash_bytes,
                signature_bytes=signature_bytes,
                keys=keys,
                key_bytes=tuple(key_bytes[key] for key in keys),
                instruction_accounts=instruction_accounts,
                failed_at=failed_at,
                fee=fee,
                pre_balances=tuple(pre_balances),
                post_balances=tuple(post_balances),
            ),
        )

    def _state(self, account: str) -> _AccountState | None:
        if account in self.accounts:
            return self.accounts[account]
        rng = self.rng
        state: _AccountState | None = None
        if rng.random() >= _CREATE_RATE:
            data = rng.randbytes(self.ledger._space[account])
            lamports = rng.between(1_000_000, 5_000_000_000)
            state = _AccountState(
                lamports, data, _ui_account(lamports, self.ledger._owner[account], data)
            )
        self.accounts[account] = state
        return state

    def _write(self, account: str, pre: _AccountState | None) -> _AccountState | None:
        rng = self.rng
        owner = self.ledger._owner[account]
        if pre is None:
            data = rng.randbytes(self.ledger._space[account])
            lamports = 890_880 + 6_960 * len(data)
            return _AccountState(lamports, data, _ui_account(lamports, owner, data))
        if rng.random() < _DELETE_RATE:
            return None
        lamports = max(0, pre.lamports + rng.between(-250_000, 250_001))
        data = pre.data
        at = rng.below(len(data))
        patch = rng.randbytes(min(len(data) - at, rng.between(1, 17)))
        data = data[:at] + patch + data[at + len(patch) :]
        return _AccountState(lamports, data, _ui_account(lamports, owner, data))
