"""solders values at the edges of the wire models: transactions and account states.

The expected wire is written down (the golden constants), never computed by the code
under test.
"""

from __future__ import annotations

import base64

import orjson
import pytest
from solders.account import Account
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction, VersionedTransaction

from tests.protocol.test_golden import (
    FUNDED_WALLET_WIRE,
    SYSTEM_PROGRAM,
    TOKEN_PROGRAM,
    TRANSFER_V0,
    TX_2,
    WALLET,
)
from trio_backtest.protocol import AccountData, Continue, ContinueParams, encode_control


def _continue_wire(params: ContinueParams) -> dict[str, object]:
    wire: dict[str, object] = orjson.loads(encode_control(Continue(params)))["params"]
    return wire


def test_continue_accepts_solders_transactions_and_sends_base64() -> None:
    versioned = VersionedTransaction.from_bytes(base64.b64decode(TRANSFER_V0))
    payer = Keypair.from_seed(bytes(range(32)))
    ix = transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=payer.pubkey(), lamports=1))
    legacy = Transaction([payer], Message([ix], payer.pubkey()), Hash.default())
    params = ContinueParams(transactions=[versioned, TX_2, legacy])
    assert params.transactions[:2] == (TRANSFER_V0, TX_2)
    # A legacy transaction is sent in its own serialization, which is also the one a
    # VersionedTransaction reads.
    again = VersionedTransaction.from_bytes(base64.b64decode(params.transactions[2]))
    assert again.signatures == legacy.signatures
    assert _continue_wire(params)["transactions"] == [TRANSFER_V0, TX_2, params.transactions[2]]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (TRANSFER_V0, "not a single one"),
        ([TRANSFER_V0, 42], "transactions[1] must be a base64 str"),
        ([b"\x01\x02"], "transactions[0] must be a base64 str"),
    ],
)
def test_continue_refuses_what_is_not_a_transaction(value: object, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        ContinueParams(transactions=value)  # type: ignore[arg-type]


def test_account_data_from_a_solders_account() -> None:
    account = Account(50_000_000_000, b"", Pubkey.from_string(SYSTEM_PROGRAM), False)
    params = ContinueParams(modify_account_states={Pubkey.from_string(WALLET): account})
    assert _continue_wire(params)["modifyAccountStates"] == {WALLET: FUNDED_WALLET_WIRE}

    token = Account(2_039_280, b"\x01" + bytes(4), Pubkey.from_string(TOKEN_PROGRAM), True)
    assert AccountData.from_account(token) == AccountData(
        data="AQAAAAA=", executable=True, lamports=2_039_280, owner=TOKEN_PROGRAM, space=5
    )


def test_account_data_to_a_solders_account() -> None:
    state = AccountData(data="AQAAAAA=", executable=False, lamports=7, owner=TOKEN_PROGRAM, space=5)
    account = state.to_account()
    assert account.lamports == 7
    assert account.data == b"\x01\x00\x00\x00\x00"
    assert account.owner == Pubkey.from_string(TOKEN_PROGRAM)
    assert not account.executable
    # "StV1DL6CwTryKyV" is base58 for b"hello world".
    hello = AccountData("StV1DL6CwTryKyV", True, 1, SYSTEM_PROGRAM, 11, encoding="base58")
    assert hello.to_account().data == b"hello world"
    assert hello.to_account().executable


@pytest.mark.parametrize(
    ("state", "fragment"),
    [
        (AccountData("***", False, 1, SYSTEM_PROGRAM, 0), "not valid base64"),
        (AccountData("", False, 1, SYSTEM_PROGRAM, 0, encoding="base64+zstd"), "unsupported"),
        (AccountData("0OIl", False, 1, SYSTEM_PROGRAM, 0, encoding="base58"), "base58"),
        (AccountData("", False, 1, "not-a-key", 0), "not a base58 public key"),
    ],
)
def test_account_data_that_cannot_become_an_account(state: AccountData, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        state.to_account()


def test_account_states_refuse_other_values() -> None:
    with pytest.raises(TypeError, match="must be an AccountData or a solders Account"):
        ContinueParams(modify_account_states={WALLET: {"lamports": 1}})  # type: ignore[dict-item]
