"""Pause before every discovered batch of a program, ask "what if?", restore, go on.

At each pause the session stands just before the batch: drain the batch's fee payer,
simulate the batch, put the payer back as it was, simulate again, then continue.
Run it as is against an embedded local server: ``python docs/examples/pause_on_discovery.py``.
"""

from __future__ import annotations

from collections import deque

import attrs
import trio
from solders.account import Account
from solders.system_program import ID as SYSTEM_PROGRAM

from trio_backtest import (
    ContinueParams,
    CreateSession,
    DiscoveryBatch,
    ManagedBacktestSession,
    Paused,
    ReadyForContinue,
    Transaction,
    open_backtest_session,
)


@attrs.frozen
class WhatIf:
    slot: int
    batch_index: int
    signature: str
    drained_error: object  # the simulation's error with the payer drained
    restored_error: object  # ... and with the payer as it was (None: it succeeds)
    restored_logs: list[str]


@attrs.frozen
class Report:
    session_id: str
    pauses: list[WhatIf]
    executed: dict[str, object]  # signature -> error of each watched transaction, as it ran


async def what_if(session: ManagedBacktestSession, batch: DiscoveryBatch) -> WhatIf:
    rpc = session.rpc
    tx = batch.decode_transactions()[0]
    payer = tx.message.account_keys[0]
    original = await rpc.get_account_info(payer)
    await rpc.modify_accounts({payer: Account(0, b"", SYSTEM_PROGRAM)})
    drained = await rpc.simulate_transaction(tx)
    await rpc.modify_accounts({payer: original})  # restore: the run goes on unchanged
    restored = await rpc.simulate_transaction(tx)
    return WhatIf(
        batch.slot,
        batch.batch_index,
        str(tx.signatures[0]),
        drained.err,
        restored.err,
        list(restored.logs or []),
    )


async def main(url: str, api_key: str, *, program: str, start_slot: int, slot_count: int) -> Report:
    create = CreateSession(start_slot=start_slot, slot_count=slot_count, discoveries=[program])
    ahead: deque[DiscoveryBatch] = deque()  # discovered, not yet reached
    pauses: list[WhatIf] = []
    executed: dict[str, object] = {}
    async with open_backtest_session(url, api_key, create) as session:
        await session.subscribe_transactions([program])
        async for event in session.events():
            match event:
                case DiscoveryBatch():
                    ahead.append(event)  # arrive up to a few slots ahead, in order
                case Paused():
                    pauses.append(await what_if(session, ahead.popleft()))
                case Transaction(signature=signature, raw=raw):
                    executed[signature] = raw["meta"]["err"]
            if isinstance(event, ReadyForContinue | Paused):
                if ahead:  # stop just before the next batch
                    await session.send_continue_to(ahead[0].slot, ahead[0].batch_index)
                else:  # one slot at a time, so no batch found meanwhile is passed by
                    await session.send_continue(ContinueParams(advance_count=1))
        return Report(session.info.session_id, pauses, executed)


async def demo() -> None:
    from trio_backtest.server import open_local_server

    async with open_local_server() as server:
        program = server.ledger.app_programs[0]
        report = await main(
            server.url, server.api_key, program=program, start_slot=1_000, slot_count=4
        )
        for pause in report.pauses:
            print(pause)


if __name__ == "__main__":
    trio.run(demo)
