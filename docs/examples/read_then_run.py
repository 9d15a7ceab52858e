"""Read the state at the first ready, send one transaction, then run the range.

Run it as is against an embedded local server: ``python docs/examples/read_then_run.py``.
"""

from __future__ import annotations

import attrs
import trio
from solders.account import Account
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from trio_backtest import (
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)

#: The simulator verifies no signatures, so any key pair can stand in for a bot.
BOT = Keypair.from_seed(bytes(range(32)))
#: An address nobody else uses, so its balance shows the transfer alone.
RECIPIENT = Keypair.from_seed(bytes(range(1, 33))).pubkey()
FUNDS = 5_000_000_000  # lamports the bot is given
AMOUNT = 1_234_567  # lamports it sends


@attrs.frozen
class Report:
    session_id: str
    balances: dict[str, int]  # the watched wallets when the range starts
    signature: str  # the transfer the bot sent
    recipient_before: int  # 0: the address does not exist yet
    recipient_after: int  # one slot later, once the transfer has executed
    bot_after: int
    seen: int  # how often the transfer came through the transaction stream


async def main(url: str, api_key: str, *, wallets: list[str], start_slot: int) -> Report:
    create = CreateSession(start_slot=start_slot, slot_count=9)
    async with open_backtest_session(url, api_key, create) as session:
        rpc = session.rpc
        await session.subscribe_transactions([str(SYSTEM_PROGRAM)])
        readies = seen = 0
        async for event in session.events():
            match event:
                case ReadyForContinue() if readies == 0:
                    readies += 1
                    # The state the range starts from.
                    found = await rpc.get_multiple_accounts(wallets)
                    balances = {w: a.lamports for w, a in zip(wallets, found, strict=True) if a}
                    recipient_before = await rpc.get_balance(RECIPIENT)
                    # Fund the bot, then send a transfer: it executes in this slot, after
                    # the slot's own transactions.
                    await rpc.modify_accounts({BOT.pubkey(): Account(FUNDS, b"", SYSTEM_PROGRAM)})
                    blockhash = await rpc.get_latest_blockhash()
                    pay = TransferParams(
                        from_pubkey=BOT.pubkey(), to_pubkey=RECIPIENT, lamports=AMOUNT
                    )
                    message = MessageV0.try_compile(BOT.pubkey(), [transfer(pay)], [], blockhash)
                    signature = await rpc.send_transaction(VersionedTransaction(message, [BOT]))
                    await session.send_continue(ContinueParams(advance_count=1))
                case ReadyForContinue():
                    readies += 1
                    if readies == 2:  # one slot later
                        recipient_after = await rpc.get_balance(RECIPIENT)
                        bot_after = await rpc.get_balance(BOT.pubkey())
                    await session.send_continue(ContinueParams(advance_count=5))
                case Transaction(signature=text) if text == str(signature):
                    seen += 1
        return Report(
            session.info.session_id,
            balances,
            str(signature),
            recipient_before,
            recipient_after,
            bot_after,
            seen,
        )


async def demo() -> None:
    from trio_backtest.server import open_local_server

    async with open_local_server() as server:
        wallets = list(server.ledger.wallets[:3])
        print(await main(server.url, server.api_key, wallets=wallets, start_slot=1_000))


if __name__ == "__main__":
    trio.run(demo)
