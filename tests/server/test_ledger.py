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
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_backtest.server._ledger import (
    Ledger,
    LedgerAccountDiff,
    LedgerConfig,
    LedgerSlot,
    LedgerTransaction,
    base58_decode,
    base58_encode,
)

UI_ACCOUNT_KEYS = {"lamports", "owner", "data", "executable", "rentEpoch", "space"}


def slots(ledger: Ledger, count: int, start: int = 0) -> Iterator[LedgerSlot]:
    for number in range(start, start + count):
        yield ledger.slot(number)


def fingerprint(ledger: Ledger, numbers: range) -> str:
    digest = hashlib.sha256()
    for number in numbers:
        slot = ledger.slot(number)
        for tx in slot.transactions:
            digest.update(orjson.dumps(tx.raw))
            digest.update(tx.wire.encode())
        for diff in slot.diffs:
            digest.update(orjson.dumps(diff.raw))
    return digest.hexdigest()


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_slots() -> None:
    first = Ledger(LedgerConfig(seed=7))
    second = Ledger(LedgerConfig(seed=7))
    assert first.programs == second.programs
    assert first.accounts == second.accounts
    # Different access orders (slots backwards, transactions backwards) must not matter.
    for number in reversed(range(40)):
        a, b = first.slot(number), second.slot(number)
        for tx in reversed(b.transactions):
            tx.raw  # noqa: B018 - materialize in the opposite order
        assert a == b
        assert [orjson.dumps(tx.raw) for tx in a.transactions] == [
            orjson.dumps(tx.raw) for tx in b.transactions
        ]
        assert [tx.wire for tx in a.transactions] == [tx.wire for tx in b.transactions]
        assert [orjson.dumps(d.raw) for d in a.diffs] == [orjson.dumps(d.raw) for d in b.diffs]


def test_different_seeds_differ() -> None:
    first, second = Ledger(LedgerConfig(seed=1)), Ledger(LedgerConfig(seed=2))
    assert set(first.programs).isdisjoint(second.programs)
    assert set(first.accounts).isdisjoint(second.accounts)
    assert fingerprint(first, range(5)) != fingerprint(second, range(5))
    signatures = {tx.signature for slot in slots(first, 5) for tx in slot.transactions}
    assert signatures.isdisjoint(tx.signature for s in slots(second, 5) for tx in s.transactions)


def test_identical_in_another_process() -> None:
    script = "\n".join(
        [
            "import hashlib, orjson",
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


def test_raw_json_is_orjson_of_raw() -> None:
    ledger = Ledger()
    for tx in ledger.slot(3).transactions:
        assert tx.raw_json == orjson.dumps(tx.raw)


# --- transactions --------------------------------------------------------------------------


def parse_wire(wire: bytes) -> dict[str, Any]:
    """Decode Solana's legacy transaction wire format (compact-u16 lengths)."""
    at = 0

    def compact() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = wire[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def take(n: int) -> bytes:
        nonlocal at
        at += n
        return wire[at - n : at]

    signatures = [take(64) for _ in range(compact())]
    header = tuple(take(3))
    keys = [take(32) for _ in range(compact())]
    blockhash = take(32)
    instructions = []
    for _ in range(compact()):
        program = take(1)[0]
        accounts = list(take(compact()))
        data = take(compact())
        instructions.append((program, accounts, data))
    assert at == len(wire)
    return {
        "signatures": signatures,
        "header": header,
        "keys": keys,
        "blockhash": blockhash,
        "instructions": instructions,
    }


@pytest.mark.parametrize(
    "config",
    [
        LedgerConfig(),
        LedgerConfig(seed=3, program_count=1, account_count=1),
        LedgerConfig(seed=4, program_count=40, account_count=600, failure_rate=0.5),
        LedgerConfig(seed=5, program_count=9, account_count=3, failure_rate=1.0),
    ],
)
def test_transactions_are_well_formed(config: LedgerConfig) -> None:
    ledger = Ledger(config)
    seen_failed = seen_ok = False
    for slot in slots(ledger, 30):
        assert [tx.index for tx in slot.transactions] == list(range(len(slot.transactions)))
        for tx in slot.transactions:
            raw = tx.raw
            message = raw["transaction"]["message"]
            keys = message["accountKeys"]
            assert tx.slot == raw["slot"] == slot.slot
            assert raw["transaction"]["signatures"][0] == tx.signature
            assert len(base58_decode(tx.signature)) == 64
            assert all(len(base58_decode(key)) == 32 for key in keys)
            assert 1 <= len(tx.programs) <= 3
            assert len(set(tx.programs)) == len(tx.programs)
            assert 1 <= len(tx.accounts) <= 4
            assert len(set(tx.accounts)) == len(tx.accounts)
            assert keys == [tx.fee_payer, *tx.accounts, *tx.programs]
            owners = {ledger.owner_of(account) for account in tx.accounts}
            assert owners <= set(tx.programs)
            for program in ledger.programs:
                assert tx.mentions(program) == (program in keys)
            meta = raw["meta"]
            assert len(meta["preBalances"]) == len(meta["postBalances"]) == len(keys)
            assert meta["preBalances"][0] - meta["postBalances"][0] == meta["fee"] >= 5000
            assert (meta["err"] is None) == tx.succeeded
            if tx.succeeded:
                seen_ok = True
                assert meta["status"] == {"Ok": None}
                assert meta["logMessages"][-1].endswith(" success")
            else:
                seen_failed = True
                assert meta["status"] == {"Err": meta["err"]}
                failing, detail = meta["err"]["InstructionError"]
                assert 0 <= failing < len(tx.programs)
                assert "Custom" in detail
                assert "failed: custom program error" in meta["logMessages"][-1]
                assert meta["preBalances"][1:] == meta["postBalances"][1:]

            wire = parse_wire(base64.b64decode(tx.wire, validate=True))
            assert wire["signatures"] == [base58_decode(tx.signature)]
            assert wire["header"] == (1, 0, len(tx.programs))
            assert [base58_encode(key) for key in wire["keys"]] == keys
            assert base58_encode(wire["blockhash"]) == message["recentBlockhash"]
            assert wire["instructions"] == [
                (ix["programIdIndex"], ix["accounts"], base58_decode(ix["data"]))
                for ix in message["instructions"]
            ]
            assert [keys[ix["programIdIndex"]] for ix in message["instructions"]] == list(
                tx.programs
            )
    assert seen_failed == (config.failure_rate > 0)
    assert seen_ok == (config.failure_rate < 1)


@pytest.mark.parametrize("mean", [20.0, 250.0])
def test_serialized_sizes_are_realistic(mean: float) -> None:
    ledger = Ledger(LedgerConfig(seed=11, transactions_per_slot=mean))
    sizes = [
        len(orjson.dumps(tx.raw))
        for slot in slots(ledger, 100 if mean < 100 else 8)
        for tx in slot.transactions
    ]
    assert len(sizes) > 500
    assert min(sizes) >= 1024
    assert max(sizes) <= 3072
    # Spread across the range rather than piled up at one size.
    assert max(sizes) - min(sizes) > 1000


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
    empty = Ledger(LedgerConfig(transactions_per_slot=0))
    assert empty.slot(5) == LedgerSlot(slot=5, transactions=(), diffs=())


# --- account diffs -------------------------------------------------------------------------


def check_ui_account(value: dict[str, Any], owner: str) -> bytes:
    assert set(value) == UI_ACCOUNT_KEYS
    encoded, encoding = value["data"]
    assert encoding == "base64"
    data = base64.b64decode(encoded, validate=True)
    assert value["space"] == len(data)
    assert value["owner"] == owner
    assert value["executable"] is False
    assert value["lamports"] >= 0
    return data


def test_diffs_match_transactions() -> None:
    ledger = Ledger(LedgerConfig(seed=21))
    created = deleted = 0
    for slot in slots(ledger, 60):
        by_signature = {tx.signature: tx for tx in slot.transactions}
        expected = [
            (tx.index, account)
            for tx in slot.transactions
            if tx.succeeded
            for account in tx.accounts
        ]
        assert [(diff.tx_index, diff.account) for diff in slot.diffs] == expected
        latest: dict[str, Any] = {}
        for diff in slot.diffs:
            tx = by_signature[diff.signature]
            assert tx.index == diff.tx_index
            assert tx.slot == diff.slot == slot.slot
            assert diff.owner == ledger.owner_of(diff.account)
            raw = diff.raw
            assert set(raw) == {"context", "account", "signature", "pre", "post"}
            assert raw["context"] == {"slot": slot.slot, "txIndex": tx.index}
            assert raw["account"] == diff.account
            assert raw["signature"] == tx.signature
            pre, post = raw["pre"], raw["post"]
            assert pre is not None or post is not None
            created += pre is None
            deleted += post is None
            for value in (pre, post):
                if value is not None:
                    check_ui_account(value, diff.owner)
            # Within a slot, each write starts from the previous write's result.
            if diff.account in latest:
                assert pre == latest[diff.account]
            latest[diff.account] = post
            # The transaction's balances agree with the diff.
            position = 1 + tx.accounts.index(diff.account)
            meta = tx.raw["meta"]
            assert meta["preBalances"][position] == (pre["lamports"] if pre else 0)
            assert meta["postBalances"][position] == (post["lamports"] if post else 0)
    assert created > 0
    assert deleted > 0


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


def test_every_program_owns_an_account() -> None:
    ledger = Ledger(LedgerConfig(program_count=8, account_count=64))
    assert {ledger.owner_of(account) for account in ledger.accounts} == set(ledger.programs)
    assert len(set(ledger.programs + ledger.accounts + ledger.wallets)) == 8 + 64 + 16
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
    assert "raw" not in repr(tx_a)
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
