"""Step through a range one slot at a time, simulating a transaction in every slot.

Run it as is against an embedded local server: ``python docs/examples/step_and_simulate.py``.
"""

from __future__ import annotations

import attrs
import trio
from solders.account import Account
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.system_program import ID as SYSTEM_PROGRAM
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction

from trio_backtest import (
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    Slot,
    open_backtest_session,
)

BOT = Keypair.from_seed(bytes(range(32)))
FUNDS = 1_000_000_000


@attrs.frozen
class Simulated:
    slot: int  # where the session stood, as its data plane says
    error: object  # None: the transfer would succeed
    logs: list[str]
    units: int | None


@attrs.frozen
class Report:
    session_id: str
    slots: list[int]  # as the control stream announced them
    simulations: list[Simulated]
    bot_balance: int  # at the last slot: simulations change nothing


async def main(url: str, api_key: str, *, to: str, start_slot: int, slot_count: int) -> Report:
    create = CreateSession(start_slot=start_slot, slot_count=slot_count)
    slots: list[int] = []
    simulations: list[Simulated] = []
    async with open_backtest_session(url, api_key, create) as session:
        rpc = session.rpc
        async for event in session.events():
            match event:
                case Slot(slot=slot):
                    slots.append(slot)
                case ReadyForContinue():
                    if not simulations:
                        await rpc.modify_accounts(
                            {BOT.pubkey(): Account(FUNDS, b"", SYSTEM_PROGRAM)}
                        )
                    # What would a transfer do here, in this slot's state?
                    pay = TransferParams(
                        from_pubkey=BOT.pubkey(), to_pubkey=Pubkey.from_string(to), lamports=1
                    )
                    blockhash = await rpc.get_latest_blockhash()
                    message = MessageV0.try_compile(BOT.pubkey(), [transfer(pay)], [], blockhash)
                    result = await rpc.simulate_transaction(VersionedTransaction(message, [BOT]))
                    simulations.append(
                        Simulated(
                            await rpc.get_slot(),
                            result.err,
                            list(result.logs or []),
                            result.units_consumed,
                        )
                    )
                    bot_balance = await rpc.get_balance(BOT.pubkey())
                    await session.send_continue(ContinueParams(advance_count=1))
        return Report(session.info.session_id, slots, simulations, bot_balance)


async def demo() -> None:
    from trio_backtest.server import open_local_server

    async with open_local_server() as server:
        to = server.ledger.wallets[0]
        report = await main(server.url, server.api_key, to=to, start_slot=1_000, slot_count=4)
        for simulated in report.simulations:
            print(simulated)


if __name__ == "__main__":
    trio.run(demo)
