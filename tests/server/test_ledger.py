from __future__ import annotations

import base64
import hashlib
import inspect
import itertools
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.transaction import VersionedTransaction

from trio_backtest.server._ledger import (
    COMPUTE_BUDGET_PROGRAM,
    MEMO_PROGRAM,
    SYSTEM_PROGRAM,
    TOKEN_PROGRAM,
    Ledger,
    LedgerAccountDiff,
    LedgerConfig,
    LedgerSlot,
    LedgerTransaction,
    base58_decode,
    base58_encode,
)


def slots(ledger: Ledger, count: int, start: int = 0) -> Iterator[LedgerSlot]:
    for number in range(start, start + count):
        yield ledger.slot(number)


def fingerprint(ledger: Ledger, numbers: range) -> str:
    digest = hashlib.sha256()
    for number in numbers:
        slot = ledger.slot(number)
        digest.update(slot.blockhash.encode())
        for tx in slot.transactions:
            digest.update(tx.wire.encode())
            digest.update(repr((tx.kind, tx.programs, tx.accounts, tx.succeeded)).encode())
        for diff in slot.diffs:
            digest.update(repr(diff).encode())
    return digest.hexdigest()


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_slots() -> None:
    first = Ledger(LedgerConfig(seed=7))
    second = Ledger(LedgerConfig(seed=7))
    assert first.programs == second.programs
    assert first.accounts == second.accounts
    assert first.genesis() == second.genesis()
    # Different access orders (slots backwards) must not matter.
    for number in reversed(range(40)):
        a, b = first.slot(number), second.slot(number)
        assert a == b
        assert [tx.wire for tx in a.transactions] == [tx.wire for tx in b.transactions]


def test_different_seeds_differ() -> None:
    first, second = Ledger(LedgerConfig(seed=1)), Ledger(LedgerConfig(seed=2))
    assert set(first.app_programs).isdisjoint(second.app_programs)
    assert set(first.accounts).isdisjoint(second.accounts)
    assert fingerprint(first, range(5)) != fingerprint(second, range(5))
    signatures = {tx.signature for slot in slots(first, 5) for tx in slot.transactions}
    assert signatures.isdisjoint(tx.signature for s in slots(second, 5) for tx in s.transactions)


def test_identical_in_another_process() -> None:
    script = "\n".join(
        [
            "import hashlib",
            "from trio_backtest.server._ledger import Ledger, LedgerConfig",
            inspect.getsource(fingerprint),
            "print(fingerprint(Ledger(LedgerConfig(seed=99)), range(10, 20)))",
        ]
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True
    ).stdout.decode()
    assert output.strip() == fingerprint(Ledger(LedgerConfig(seed=99)), range(10, 20))


# --- transactions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        LedgerConfig(seed=1),
        LedgerConfig(seed=3, program_count=1, account_count=1),
        LedgerConfig(seed=4, program_count=40, account_count=600, failure_rate=0.5),
        LedgerConfig(seed=5, program_count=9, account_count=3, failure_rate=1.0),
    ],
)
def test_transactions_are_well_formed(config: LedgerConfig) -> None:
    ledger = Ledger(config)
    kinds: set[str] = set()
    seen_failed = seen_ok = False
    for slot in slots(ledger, 30):
        assert [tx.index for tx in slot.transactions] == list(range(len(slot.transactions)))
        for tx in slot.transactions:
            kinds.add(tx.kind)
            seen_failed |= not tx.succeeded
            seen_ok |= tx.succeeded
            decoded = VersionedTransaction.from_bytes(base64.b64decode(tx.wire, validate=True))
            assert decoded == tx.transaction
            assert str(decoded.signatures[0]) == tx.signature
            keys = [str(key) for key in decoded.message.account_keys]
            assert keys[0] == tx.fee_payer
            assert tx.fee_payer in ledger.wallets
            assert decoded.message.header.num_required_signatures == 1
            assert set(tx.programs) <= set(ledger.programs)
            assert 1 <= len(tx.programs) <= 3
            invoked = [keys[ix.program_id_index] for ix in decoded.message.instructions]
            assert list(dict.fromkeys(invoked)) == list(tx.programs)
            assert len(set(tx.accounts)) == len(tx.accounts)
            assert set(tx.accounts) <= set(keys)
            assert tx.fee_payer not in tx.accounts
            assert tx.writes == ((tx.fee_payer, *tx.accounts) if tx.succeeded else (tx.fee_payer,))
            main = {"transfer": SYSTEM_PROGRAM, "token": TOKEN_PROGRAM, "memo": MEMO_PROGRAM}
            if tx.kind in main:
                assert main[tx.kind] in tx.programs
            else:
                assert set(tx.programs) & set(ledger.app_programs)
            assert len(bytes(decoded)) <= 1232  # Solana's packet size
    assert seen_failed == (config.failure_rate > 0)
    assert seen_ok == (config.failure_rate < 1)
    if config.account_count > 1:
        assert kinds == {"transfer", "token", "app", "memo"}


def test_counts_follow_the_mean() -> None:
    ledger = Ledger(LedgerConfig(seed=5))
    counts = [len(slot.transactions) for slot in slots(ledger, 400)]
    assert 19 <= statistics.mean(counts) <= 21
    assert 12 <= statistics.variance(counts) <= 30  # Poisson: variance ~ mean
    assert len(set(counts)) > 10


def test_firehose_profile() -> None:
    ledger = Ledger(LedgerConfig(seed=8, transactions_per_slot=250.0))
    counts = [len(slot.transactions) for slot in slots(ledger, 12)]
    assert 230 <= statistics.mean(counts) <= 270
    large = Ledger(LedgerConfig(seed=8, transactions_per_slot=2000.0))
    assert 1800 <= len(large.slot(1).transactions) <= 2200


def test_sparse_and_empty_slots() -> None:
    sparse = Ledger(LedgerConfig(seed=2, transactions_per_slot=0.5))
    counts = [len(slot.transactions) for slot in slots(sparse, 200)]
    assert 0 in counts
    assert max(counts) > 0
    empty = Ledger(LedgerConfig(transactions_per_slot=0)).slot(5)
    assert (empty.slot, empty.transactions, empty.diffs) == (5, (), ())


# --- account diffs -------------------------------------------------------------------------


def test_diffs_follow_the_plan() -> None:
    ledger = Ledger(LedgerConfig(seed=9))
    created = 0
    for slot in slots(ledger, 50):
        expected = [
            (tx.index, tx.signature, account) for tx in slot.transactions for account in tx.writes
        ]
        assert [(d.tx_index, d.signature, d.account) for d in slot.diffs] == expected
        for diff in slot.diffs:
            assert diff.slot == slot.slot
            if diff.account in ledger.accounts:
                assert diff.owner == ledger.owner_of(diff.account)
            else:
                created += 1  # a transfer to a fresh address creates a System account
                assert diff.owner == SYSTEM_PROGRAM
    assert created > 0


def test_diff_matching() -> None:
    ledger = Ledger(LedgerConfig(seed=4))
    diff = ledger.slot(0).diffs[0]
    other_program = next(p for p in ledger.programs if p != diff.owner)
    assert diff.matches(diff.account, "account")
    assert diff.matches(diff.owner, "program")
    assert not diff.matches(diff.owner, "account")
    assert not diff.matches(diff.account, "program")
    assert not diff.matches(other_program, "program")
    with pytest.raises(ValueError, match="address_type"):
        diff.matches(diff.account, "wallet")


def test_key_sets() -> None:
    ledger = Ledger(LedgerConfig(program_count=8, account_count=64))
    assert ledger.programs == (
        TOKEN_PROGRAM,
        SYSTEM_PROGRAM,
        MEMO_PROGRAM,
        *ledger.app_programs,
        COMPUTE_BUDGET_PROGRAM,
    )
    assert len(ledger.app_programs) == 8
    assert len(ledger.token_accounts) == 64
    assert len(ledger.wallets) == 16
    assert ledger.accounts == ledger.token_accounts + ledger.wallets
    assert {ledger.owner_of(a) for a in ledger.token_accounts} == {TOKEN_PROGRAM}
    assert {ledger.owner_of(a) for a in ledger.wallets} == {SYSTEM_PROGRAM}
    assert len(set(ledger.programs + ledger.accounts + (ledger.mint,))) == 12 + 80 + 1
    genesis = ledger.genesis()
    assert {str(key) for key in genesis} == {*ledger.accounts, ledger.mint}
    with pytest.raises(KeyError):
        ledger.owner_of(ledger.programs[0])


# --- bundles, config, cache ----------------------------------------------------------------


def test_bundles_examples() -> None:
    ledger = Ledger()
    assert ledger.bundles(150, 420) == [(150, 199), (200, 299), (300, 399), (400, 420)]
    assert ledger.bundles(200, 299) == [(200, 299)]
    assert ledger.bundles(0, 0) == [(0, 0)]
    assert ledger.bundles(99, 100) == [(99, 99), (100, 100)]
    assert Ledger(LedgerConfig(bundle_size=1)).bundles(3, 5) == [(3, 3), (4, 4), (5, 5)]
    for start, end in [(5, 4), (-1, 3)]:
        with pytest.raises(ValueError, match="invalid slot range"):
            ledger.bundles(start, end)


@settings(max_examples=150)
@given(
    start=st.integers(0, 10**6),
    length=st.integers(0, 5_000),
    size=st.integers(1, 1_000),
)
def test_bundles_cover_the_range(start: int, length: int, size: int) -> None:
    end = start + length
    bundles = Ledger(LedgerConfig(bundle_size=size)).bundles(start, end)
    assert bundles[0][0] == start
    assert bundles[-1][1] == end
    for (_, last), (next_first, _) in itertools.pairwise(bundles):
        assert next_first == last + 1
        assert (last + 1) % size == 0
    for first, last in bundles:
        assert first <= last
        assert first // size == last // size


@pytest.mark.parametrize(
    "changes",
    [
        {"transactions_per_slot": -1.0},
        {"transactions_per_slot": float("nan")},
        {"program_count": 0},
        {"account_count": 0},
        {"bundle_size": 0},
        {"failure_rate": 1.5},
    ],
)
def test_config_validation(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        LedgerConfig(**changes)


def test_slot_argument_checked() -> None:
    with pytest.raises(ValueError, match="slot"):
        Ledger().slot(-1)


def test_memo_is_bounded() -> None:
    ledger = Ledger(cache_slots=4)
    first = ledger.slot(0)
    assert ledger.slot(0) is first
    for number in range(1, 10):
        ledger.slot(number)
    assert ledger.slot(9) is ledger.slot(9)
    regenerated = ledger.slot(0)
    assert regenerated is not first
    assert regenerated == first

    firehose = Ledger(LedgerConfig(transactions_per_slot=300), cache_transactions=100)
    big = firehose.slot(0)
    assert firehose.slot(0) is big  # the latest slot stays even above the bound
    firehose.slot(1)
    assert firehose.slot(0) is not big


def test_values_are_frozen_and_hashable() -> None:
    a, b = Ledger(LedgerConfig(seed=6)), Ledger(LedgerConfig(seed=6))
    tx_a, tx_b = a.slot(2).transactions[0], b.slot(2).transactions[0]
    assert tx_a == tx_b
    assert hash(tx_a) == hash(tx_b)
    assert hash(a.slot(2)) == hash(b.slot(2))
    assert isinstance(a.slot(2).diffs[0], LedgerAccountDiff)
    assert isinstance(tx_a, LedgerTransaction)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        tx_a.index = 5  # type: ignore[misc]
    assert "transaction=" not in repr(tx_a)
    assert tx_a.signature in repr(tx_a)


# --- base58 --------------------------------------------------------------------------------


def test_base58_known_values() -> None:
    assert base58_encode(b"hello world") == "StV1DL6CwTryKyV"
    assert base58_encode(b"\0" * 32) == "1" * 32
    assert base58_encode(b"") == ""
    assert base58_encode(b"\0\0\x01") == "112"
    with pytest.raises(ValueError, match="invalid base58"):
        base58_decode("0OIl")


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_base58_round_trip(data: bytes) -> None:
    assert base58_decode(base58_encode(data)) == data
