"""Typed views of notifications: solders values over the raw JSON, which stays as it came.

The payloads are the golden ones of protocol.md §5; the values expected of them are
read off those payloads by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
from solders.pubkey import Pubkey
from solders.transaction_status import UiTransaction

from tests.protocol.test_golden import (
    JUPITER,
    SIGNATURE,
    START,
    TOKEN_ACCOUNT,
    TOKEN_PROGRAM,
    TRANSACTION,
    UI_ACCOUNT_PRE,
)
from trio_backtest import AccountDiff, ProtocolError, Transaction


def test_transaction_decodes_to_the_get_transaction_type() -> None:
    event = Transaction(START + 12, SIGNATURE, TRANSACTION)
    decoded = event.decode()
    assert decoded.slot == START + 12
    meta = decoded.transaction.meta
    assert meta is not None
    assert meta.fee == 5_000
    assert meta.post_balances[0] == 999_995_000
    assert meta.compute_units_consumed == 41_234
    assert meta.log_messages is not None
    assert meta.log_messages[1] == "Program log: Instruction: Route"
    ui = decoded.transaction.transaction
    assert isinstance(ui, UiTransaction)
    assert [str(s) for s in ui.signatures] == [SIGNATURE]
    assert event.raw is TRANSACTION  # the raw JSON stays available, untouched


def test_a_transaction_not_in_the_get_transaction_shape() -> None:
    broken = {**TRANSACTION, "meta": {"fee": "lots"}}
    with pytest.raises(ProtocolError, match="not in the getTransaction shape"):
        Transaction(START, SIGNATURE, broken).decode()


def test_account_diff_views_pre_and_post_as_accounts() -> None:
    # "2VfUX" is base58 for bytes 1, 2, 3, 4.
    post = {**UI_ACCOUNT_PRE, "lamports": 995_000, "data": ["2VfUX", "base58"]}
    diff = AccountDiff(START, SIGNATURE, TOKEN_ACCOUNT, UI_ACCOUNT_PRE, post, {})
    before, after = diff.pre_account, diff.post_account
    assert before is not None
    assert after is not None
    assert before.lamports == 2_039_280
    assert before.owner == Pubkey.from_string(TOKEN_PROGRAM)
    assert before.data == b"\x01" + bytes(31) + b"\xe8\x03" + bytes(6)  # amount 1000
    assert before.rent_epoch == 18_446_744_073_709_551_615
    assert (after.lamports, after.data) == (995_000, b"\x01\x02\x03\x04")


def test_created_and_deleted_accounts_have_no_pre_or_post() -> None:
    created = AccountDiff(START, SIGNATURE, TOKEN_ACCOUNT, None, UI_ACCOUNT_PRE, {})
    assert created.pre_account is None
    assert created.post_account is not None
    assert (
        AccountDiff(START, SIGNATURE, TOKEN_ACCOUNT, UI_ACCOUNT_PRE, None, {}).post_account is None
    )


@pytest.mark.parametrize(
    "broken",
    [
        {**UI_ACCOUNT_PRE, "data": "AQID"},
        {**UI_ACCOUNT_PRE, "owner": JUPITER + "!"},
        {k: v for k, v in UI_ACCOUNT_PRE.items() if k != "lamports"},
        {**UI_ACCOUNT_PRE, "lamports": -1},
    ],
)
def test_an_account_diff_that_is_not_an_account(broken: dict[str, Any]) -> None:
    diff = AccountDiff(START, SIGNATURE, TOKEN_ACCOUNT, broken, UI_ACCOUNT_PRE, {})
    with pytest.raises(ProtocolError, match="'pre' is not a UiAccount"):
        _ = diff.pre_account
    assert diff.post_account is not None  # one bad side does not spoil the other
