"""Data-plane conformance (protocol.md §5): subscriptions, replay, window, zstd, ordering."""

from __future__ import annotations

import pytest
import trio
import trio_websocket
import zstandard

from tests.conftest import SECRET_KEY
from tests.server.wire import (
    Control,
    notification_signatures,
    open_control,
    open_data,
    run_to_completion,
    signatures_for,
)
from trio_backtest.protocol import (
    AccountDiffNotification,
    Completed,
    Continue,
    ContinueParams,
    CreateSession,
    ReadyForContinue,
    RpcError,
    RpcResult,
    Slot,
    Success,
    TransactionNotification,
    decode_rpc,
)
from trio_backtest.server import Delivery, LocalServer, open_local_server


async def _advance(control: Control, count: int) -> None:
    await control.send(Continue(ContinueParams(advance_count=count)))
    await control.recv_until(ReadyForContinue, Completed)


async def _finish(control: Control, stride: int) -> None:
    """Continue by ``stride`` until ``completed`` (the session is ready now)."""
    while True:
        await control.send(Continue(ContinueParams(advance_count=stride)))
        last = (await control.recv_until(ReadyForContinue, Completed))[-1].message
        if isinstance(last, Completed):
            return


async def _started(
    server: LocalServer, nursery: trio.Nursery, start: int, count: int
) -> tuple[Control, str]:
    control = await open_control(server, nursery)
    created = await control.create(
        CreateSession(start_slot=start, slot_count=count - 1, disconnect_timeout_secs=60)
    )
    await control.recv_until(ReadyForContinue)
    return control, created.session_id


async def test_replay_from_slot_resends_from_that_slot_inclusive(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = server.ledger.programs[1]
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 100, 20)
        await _advance(control, 6)  # executed 100..105
        data = await open_data(server, nursery, session_id)
        await data.subscribe("transactionSubscribe", program, replayFromSlot=103)
        data.collect(nursery)
        await trio.sleep(1)
        replayed = notification_signatures(data.take())
        assert replayed == signatures_for(server, program, 103, 105)
        await _advance(control, 2)  # 106, 107 live
        await trio.sleep(1)
        live = notification_signatures(data.take())
        assert live == signatures_for(server, program, 106, 107)
        assert server.statistics().replays_served == 1
        nursery.cancel_scope.cancel()


async def test_replay_older_than_the_window_is_refused_with_the_oldest_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_local_server(api_keys=(SECRET_KEY,), tcp=False, transactions_per_slot=2.0) as server,
        trio.open_nursery() as nursery,
    ):
        control, session_id = await _started(server, nursery, 1000, 200)
        await _advance(control, 105)  # executed 1000..1104: the window keeps 1005..1104
        data = await open_data(server, nursery, session_id)
        program = server.ledger.programs[0]
        await data.request("transactionSubscribe", [program, {"replayFromSlot": 1004}])
        answer = await data.recv()
        assert isinstance(answer, RpcError)
        assert (answer.code, answer.message) == (-32010, "replay window exceeded")
        assert answer.data == {"oldestSlot": 1005}
        assert answer.oldest_slot == 1005
        await data.subscribe("transactionSubscribe", program, replayFromSlot=1005)
        data.collect(nursery)
        await trio.sleep(1)
        replayed = notification_signatures(data.take())
        assert replayed == signatures_for(server, program, 1005, 1104)
        nursery.cancel_scope.cancel()


async def test_zstd_frames_decode_with_one_streaming_decompressor(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 10, 20)
        plain = await open_data(server, nursery, session_id)
        packed = await open_data(server, nursery, session_id)
        for program in server.ledger.programs[:3]:
            await plain.subscribe("transactionSubscribe", program)
            await packed.subscribe("transactionSubscribe", program, compression="zstd")
        await packed.subscribe(
            "accountDiffSubscribe",
            server.ledger.programs[0],
            address_type="program",
            compression="zstd",
        )
        await plain.subscribe(
            "accountDiffSubscribe", server.ledger.programs[0], address_type="program"
        )
        plain.collect(nursery)
        packed.collect(nursery)
        await _advance(control, 5)
        await trio.sleep(1)
        plain_frames = plain.take()
        packed_frames = packed.take()
        assert all(isinstance(f, bytes) for f in packed_frames)
        decompressor = zstandard.ZstdDecompressor().decompressobj()
        unpacked = [decompressor.decompress(frame) for frame in packed_frames]
        assert len(unpacked) == len(plain_frames) > 20
        for raw, text in zip(unpacked, plain_frames, strict=True):
            ours, theirs = decode_rpc(raw), decode_rpc(text)
            assert isinstance(ours, TransactionNotification | AccountDiffNotification)
            assert isinstance(theirs, TransactionNotification | AccountDiffNotification)
            assert ours.result.raw == theirs.result.raw
        # The frames share one compression context: later ones are smaller than alone.
        fresh = sum(len(zstandard.ZstdCompressor().compress(r)) for r in unpacked)
        assert sum(len(f) for f in packed_frames) < fresh
        nursery.cancel_scope.cancel()


async def test_unsubscribe_stops_the_stream(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    kept_program, dropped_program = server.ledger.programs[:2]
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 10, 20)
        data = await open_data(server, nursery, session_id)
        kept = await data.subscribe("transactionSubscribe", kept_program)
        dropped = await data.subscribe("transactionSubscribe", dropped_program)
        data.collect(nursery)
        await _advance(control, 2)
        await trio.sleep(1)
        first = [decode_rpc(f) for f in data.take()]
        assert {m.subscription for m in first if isinstance(m, TransactionNotification)} == {
            kept,
            dropped,
        }
        request_id = await data.request("transactionUnsubscribe", [dropped])
        await _advance(control, 3)
        await trio.sleep(1)
        later = [decode_rpc(f) for f in data.take()]
        acks = [m for m in later if isinstance(m, RpcResult)]
        assert acks == [RpcResult(request_id, True)]
        subs = [m.subscription for m in later if isinstance(m, TransactionNotification)]
        assert subs
        assert set(subs) == {kept}
        nursery.cancel_scope.cancel()


async def test_account_diff_subscriptions_by_program_and_by_account(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = server.ledger.programs[0]  # SPL Token, which owns the token accounts
    planned = [d.account for slot in range(40, 50) for d in server.ledger.slot(slot).diffs]
    account = next(a for a in planned if server.ledger.owner_of(a) == program)
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 40, 20)
        data = await open_data(server, nursery, session_id)
        by_program = await data.subscribe("accountDiffSubscribe", program, address_type="program")
        by_account = await data.subscribe("accountDiffSubscribe", account)
        data.collect(nursery)
        await _advance(control, 10)
        await trio.sleep(1)
        got: dict[int, list[tuple[str, str]]] = {by_program: [], by_account: []}
        for frame in data.take():
            message = decode_rpc(frame)
            assert isinstance(message, AccountDiffNotification)
            got[message.subscription].append(message.result.key)
        diffs = [d for slot in range(40, 50) for d in server.ledger.slot(slot).diffs]
        assert got[by_program] == [(d.signature, d.account) for d in diffs if d.owner == program]
        assert got[by_account] == [(d.signature, d.account) for d in diffs if d.account == account]
        assert got[by_account]
        nursery.cancel_scope.cancel()


async def test_after_completed_data_sockets_close_with_1000(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 10, 3)
        data = await open_data(server, nursery, session_id)
        await data.subscribe("transactionSubscribe", server.ledger.programs[0])
        data.collect(nursery)
        await _advance(control, 3)
        with trio.fail_after(10):
            await data.closed.wait()
        assert data.close_code == 1000
        assert notification_signatures(data.take()) == signatures_for(
            server, server.ledger.programs[0], 10, 12
        )
        nursery.cancel_scope.cancel()


async def test_after_completed_a_replaying_subscription_recovers_the_tail_until_close(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    program = server.ledger.programs[0]
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 10, 6)
        await _advance(control, 6)  # completed, nobody was subscribed
        late = await open_data(server, nursery, session_id)
        await late.subscribe("transactionSubscribe", program, replayFromSlot=13)
        late.collect(nursery)
        with trio.fail_after(10):
            await late.closed.wait()
        assert late.close_code == 1000
        assert notification_signatures(late.take()) == signatures_for(server, program, 13, 15)
        await control.send('{"method": "closeBacktestSession"}')
        assert (await control.recv()).message == Success()
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            await open_data(server, nursery, session_id)
        assert rejected.value.status_code == 404
        nursery.cancel_scope.cancel()


async def test_notifications_of_a_slot_are_written_before_the_next_control_message(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 300, 12)
        sockets = [await open_data(server, nursery, session_id) for _ in range(2)]
        for data in sockets:
            for program in server.ledger.programs:
                await data.subscribe("transactionSubscribe", program)
                await data.subscribe("accountDiffSubscribe", program, address_type="program")
        for data in sockets:
            data.collect(nursery)
        await _finish(control, 4)
        record = server.delivered(session_id)
        assert sum(d.plane == "data" and d.slot is not None for d in record) > 500
        # Every control message that follows slot s (its slotNotification(s+1), a ready,
        # completed) comes after every notification of slots <= s in the write record.
        last_executed: int | None = None
        for position, delivery in enumerate(record):
            if delivery.plane == "control" and delivery.method == "slotNotification":
                assert delivery.slot is not None
                last_executed = delivery.slot - 1
            if delivery.plane == "control" and last_executed is not None:
                later = record[position + 1 :]
                assert not any(_data_of_slot_at_most(d, last_executed) for d in later)
        nursery.cancel_scope.cancel()


def _data_of_slot_at_most(delivery: Delivery, slot: int) -> bool:
    return delivery.plane == "data" and delivery.slot is not None and delivery.slot <= slot


async def test_each_subscription_sees_execution_order(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, session_id = await _started(server, nursery, 500, 8)
        data = await open_data(server, nursery, session_id)
        subs = {
            await data.subscribe("accountDiffSubscribe", program, address_type="program"): program
            for program in server.ledger.programs
        }
        data.collect(nursery)
        await _finish(control, 3)
        await data.closed.wait()
        positions: dict[int, list[tuple[int, int]]] = {sub: [] for sub in subs}
        for frame in data.take():
            message = decode_rpc(frame)
            assert isinstance(message, AccountDiffNotification)
            positions[message.subscription].append(
                (message.result.slot, message.result.tx_index or 0)
            )
        for sub, seen in positions.items():
            assert seen == sorted(seen)
            diffs = [d for s in range(500, 508) for d in server.ledger.slot(s).diffs]
            assert len(seen) == sum(d.owner == subs[sub] for d in diffs)
        nursery.cancel_scope.cancel()


async def _scripted_run(seed: int) -> tuple[list[str | bytes], list[str | bytes]]:
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=seed) as server:
        async with trio.open_nursery() as nursery:
            control = await open_control(server, nursery)
            created = await control.create(
                CreateSession(
                    start_slot=77,
                    slot_count=9,
                    send_summary=True,
                    discoveries=[server.ledger.programs[4]],
                )
            )
            data = await open_data(server, nursery, created.session_id)
            await data.subscribe("transactionSubscribe", server.ledger.programs[0])
            await data.subscribe(
                "accountDiffSubscribe", server.ledger.programs[1], address_type="program"
            )
            data.collect(nursery)
            await run_to_completion(control, stride=4)
            await data.closed.wait()
            nursery.cancel_scope.cancel()
        control_frames = [
            f.replace(created.session_id, "<id>") if isinstance(f, str) else f
            for f in control.frames
        ]
        return control_frames, data.frames


async def test_same_seed_gives_byte_identical_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first = await _scripted_run(seed=11)
    second = await _scripted_run(seed=11)
    other = await _scripted_run(seed=12)
    assert len(first[1]) > 50
    assert first == second
    assert first[1] != other[1]


async def test_slot_notifications_follow_the_executed_slots(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        control, _session_id = await _started(server, nursery, 5, 5)
        await control.send(Continue(ContinueParams(advance_count=2)))
        messages = [m.message for m in await control.recv_until(ReadyForContinue)]
        assert messages == [Slot(6), Slot(7), ReadyForContinue()]
        nursery.cancel_scope.cancel()


async def test_subscription_ids_are_unique_across_sockets_of_a_session(
    server: LocalServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio.open_nursery() as nursery:
        _, session_id = await _started(server, nursery, 5, 5)
        one, two = (
            await open_data(server, nursery, session_id),
            await open_data(server, nursery, session_id),
        )
        ids = [
            await one.subscribe("transactionSubscribe", server.ledger.programs[0]),
            await two.subscribe("transactionSubscribe", server.ledger.programs[0]),
            await one.subscribe("accountDiffSubscribe", server.ledger.accounts[0]),
        ]
        assert len(set(ids)) == 3
        nursery.cancel_scope.cancel()
