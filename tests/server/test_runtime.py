"""The runtime executes the ledger's plan for real: outcomes, diffs, balances, JSON shapes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from solders.transaction_status import EncodedConfirmedTransactionWithStatusMeta

from trio_backtest.server._chain import References, SlotRun
from trio_backtest.server._ledger import Ledger, LedgerConfig
from trio_backtest.server._runtime import Engine, Executed

SEED = 11


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger(LedgerConfig(seed=SEED))


@pytest.fixture(scope="module")
def runs(ledger: Ledger) -> list[SlotRun]:
    """Slots 0-59 of bundle 0, executed once for the module."""
    references = References(ledger, Engine(ledger), cache_slots=64)
    reference = references.acquire(0, frozenset())
    return [reference.run(slot) for slot in range(60)]


def _executed(runs: list[SlotRun]) -> Iterator[Executed]:
    for run in runs:
        yield from run.executed


def test_execution_agrees_with_the_plan(ledger: Ledger, runs: list[SlotRun]) -> None:
    for run in runs:
        plan = ledger.slot(run.slot)
        assert [e.signature for e in run.executed] == [tx.signature for tx in plan.transactions]
        for executed, tx in zip(run.executed, plan.transactions, strict=True):
            assert executed.succeeded == tx.succeeded, (tx.kind, executed.logs)
            assert executed.programs == tx.programs
            assert executed.index == tx.index
        real = [(e.signature, d.account, d.owner) for e in run.executed for d in e.diffs]
        planned = [(d.signature, d.account, d.owner) for d in plan.diffs]
        assert real == planned


def test_failures_carry_their_real_error_and_logs(ledger: Ledger, runs: list[SlotRun]) -> None:
    # What each way of failing by construction really ends in (written down from the
    # programs' sources: system error 1 is ResultWithNegativeLamports, token error 4 is
    # OwnerMismatch, the memo program demands a signature from every account it names).
    expected = {
        "transfer": {"Custom": 1},
        "token": {"Custom": 4},
        "memo": "MissingRequiredSignature",
        "app": "MissingRequiredSignature",
    }
    seen = set()
    for run in runs:
        for executed, tx in zip(run.executed, ledger.slot(run.slot).transactions, strict=True):
            if tx.succeeded:
                assert executed.raw["meta"]["err"] is None
                continue
            err = executed.raw["meta"]["err"]
            assert err["InstructionError"][1] == expected[tx.kind]
            assert executed.raw["meta"]["status"] == {"Err": err}
            assert any("failed" in line for line in executed.logs)
            seen.add(tx.kind)
    assert seen == set(expected)


def test_lamports_move_only_by_fees(runs: list[SlotRun]) -> None:
    fees = 0
    for run in runs:
        for executed in run.executed:
            meta = executed.raw["meta"]
            assert meta["fee"] >= 5000
            assert sum(meta["preBalances"]) - sum(meta["postBalances"]) == meta["fee"]
            fees += meta["fee"]
    first, last = runs[0], runs[-1]
    end = dict(last.start)
    for executed in last.executed:
        writable = [k for k, w in zip(executed.keys, executed.writable, strict=True) if w]
        end.update(zip(writable, executed.post, strict=True))
    total_before = sum(a.lamports for a in first.start.values() if a is not None)
    total_after = sum(a.lamports for a in end.values() if a is not None)
    assert total_before - total_after == fees


def test_diffs_chain_from_one_state_to_the_next(runs: list[SlotRun]) -> None:
    latest = {str(k): v for k, v in runs[0].start.items()}
    created = 0
    for run in runs:
        for executed in run.executed:
            for diff in executed.diffs:
                assert latest.get(diff.account) == diff.pre
                created += diff.pre is None
                latest[diff.account] = diff.post
    assert created > 0


def test_notifications_are_get_transaction_json_of_realistic_size(runs: list[SlotRun]) -> None:
    sizes = []
    for executed in _executed(runs):
        text = orjson.dumps(executed.raw)
        sizes.append(len(text))
        parsed = EncodedConfirmedTransactionWithStatusMeta.from_json(text.decode())
        assert str(parsed.transaction.transaction.signatures[0]) == executed.signature
        assert parsed.slot == executed.slot
    assert len(sizes) > 1000
    assert min(sizes) >= 1024
    assert max(sizes) <= 3072
    assert max(sizes) - min(sizes) > 1000


def test_an_evicted_slot_is_executed_again_identically(ledger: Ledger, runs: list[SlotRun]) -> None:
    small = References(ledger, Engine(ledger), cache_slots=2).acquire(0, frozenset())
    for slot in range(12):
        small.run(slot)
    for slot in (3, 0, 11, 7):
        again = small.run(slot)
        assert [orjson.dumps(e.raw) for e in again.executed] == [
            orjson.dumps(e.raw) for e in runs[slot].executed
        ]
        assert [d.raw for e in again.executed for d in e.diffs] == [
            d.raw for e in runs[slot].executed for d in e.diffs
        ]


def test_a_signer_filter_skips_that_signers_transactions(ledger: Ledger) -> None:
    wallet = ledger.wallets[0]
    filtered = References(ledger, Engine(ledger), cache_slots=4).acquire(0, frozenset({wallet}))
    for slot in range(5):
        plan = [tx.signature for tx in ledger.slot(slot).transactions if tx.fee_payer != wallet]
        assert [e.signature for e in filtered.run(slot).executed] == plan


def test_a_reset_engine_serves_worlds_as_before(ledger: Ledger, runs: list[SlotRun]) -> None:
    engine = Engine(ledger)
    reference = References(ledger, engine, cache_slots=4).acquire(0, frozenset())
    first = [orjson.dumps(e.raw) for e in reference.run(0).executed]
    engine.reset()
    again = References(ledger, engine, cache_slots=4).acquire(0, frozenset())
    assert [orjson.dumps(e.raw) for e in again.run(0).executed] == first
    assert [orjson.dumps(e.raw) for e in reference.run(1).executed] == [
        orjson.dumps(e.raw) for e in runs[1].executed
    ]
