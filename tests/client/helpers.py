"""Helpers shared by the managed-client tests."""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any, Literal

import trio
from trio_websocket import WebSocketConnection

from trio_backtest import (
    AccountDiff,
    ContinueParams,
    ManagedBacktestSession,
    ManagedEvent,
    ReadyForContinue,
    Reconnecting,
    StatusCell,
    Transaction,
    Up,
)
from trio_backtest.server import LocalServer


async def drive(session: ManagedBacktestSession, stride: int = 10) -> list[ManagedEvent]:
    """Run ``session`` to completion, continuing by ``stride``; every event, in order."""
    seen: list[ManagedEvent] = []
    async for event in session.events():
        seen.append(event)
        if isinstance(event, ReadyForContinue):
            await session.send_continue(ContinueParams(advance_count=stride))
    return seen


def expected_transactions(
    srv: LocalServer, programs: Iterable[str], start: int, end: int
) -> list[str]:
    """Signatures the server executed in ``[start, end]`` mentioning any of ``programs``."""
    wanted = tuple(programs)
    return [
        tx.signature
        for slot in range(start, end + 1)
        for tx in srv.ledger.slot(slot).transactions
        if any(tx.mentions(p) for p in wanted)
    ]


def expected_diffs(
    srv: LocalServer, programs: Iterable[str], start: int, end: int
) -> list[tuple[str, str]]:
    """``(signature, account)`` of the diffs in ``[start, end]`` of accounts ``programs`` own."""
    wanted = tuple(programs)
    return [
        (d.signature, d.account)
        for slot in range(start, end + 1)
        for d in srv.ledger.slot(slot).diffs
        if any(d.matches(p, "program") for p in wanted)
    ]


def signatures(events: Iterable[ManagedEvent]) -> list[str]:
    """The transactions among ``events``, by signature, in order."""
    return [e.signature for e in events if isinstance(e, Transaction)]


def diff_keys(events: Iterable[ManagedEvent]) -> list[tuple[str, str]]:
    """The account diffs among ``events``, as ``(signature, account)``, in order."""
    return [(e.signature, e.account) for e in events if isinstance(e, AccountDiff)]


async def until_ready(session: ManagedBacktestSession) -> list[ManagedEvent]:
    """Consume events up to and including the next `ReadyForContinue`."""
    seen: list[ManagedEvent] = []
    while not seen or not isinstance(seen[-1], ReadyForContinue):
        seen.append(await session.next_event())
    return seen


class SlowReader:
    """A WebSocket stand-in whose reader takes ``delay`` seconds per message."""

    def __init__(self, inner: WebSocketConnection, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    async def get_message(self) -> str | bytes:
        await trio.sleep(self._delay)
        return await self._inner.get_message()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def drop_again_and_again(
    server: LocalServer, plane: Literal["control", "data"], cell: StatusCell, every: int, times: int
) -> None:
    """Lose ``plane``'s socket after ``every`` server messages, ``times`` times over.

    Each time it waits until ``cell`` went through ``Reconnecting`` back to ``Up``.
    """
    for _ in range(times):
        server.faults.drop(plane, after_messages=every)
        await cell.wait_for(lambda s: isinstance(s, Reconnecting))
        await cell.wait_for(lambda s: isinstance(s, Up))


def attempts(cell: StatusCell) -> list[int]:
    """The attempt number of every ``Reconnecting`` in ``cell``'s history."""
    return [s.attempt for s in cell.history if isinstance(s, Reconnecting)]


class FixedRandom(random.Random):
    """``uniform(a, b)`` returns ``a + fraction * (b - a)`` and records each call."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + self.fraction * (b - a)
