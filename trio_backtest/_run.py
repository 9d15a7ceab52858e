"""``trio-backtest run``: one whole backtest, shown live, against the embedded or a hosted server.

The command is a small driver on top of the public API; everything about display and
output lives here, argument parsing lives in :mod:`trio_backtest.cli`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final, final, get_args

import attrs
import orjson
import trio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from ._config import ClientConfig, Transport
from ._errors import ManagedSessionError
from ._events import AccountDiff, StreamGap, Transaction
from ._parallel import open_parallel_session
from ._plumbing import unwrap_single
from ._ranges import available_ranges
from ._session import ManagedBacktestSession, open_backtest_session
from ._transport import cause_of, check_transport_security, discard, websocket_connector
from .protocol import (
    Completed,
    ContinueParams,
    CreateSession,
    CreateSessionParams,
    ReadyForContinue,
    ServerError,
    Slot,
    Status,
)

__all__ = ["RunOptions", "RunProgress", "render_plain", "render_progress", "run"]

logger = logging.getLogger("trio_backtest.cli")

#: Where the API key for a hosted URL comes from when ``--api-key`` is not given.
API_KEY_VARIABLE = "SIMULATOR_API_KEY"
#: How often the live display and the plain log lines refresh (seconds).
REFRESH = 0.25
DEFAULT_START_SLOT = 1_000
DEFAULT_SLOT_COUNT = 299
DEFAULT_STRIDE = 25
DEFAULT_DISCONNECT_TIMEOUT = 60
PLAIN_EVERY = 5.0


@final
@attrs.frozen
class RunOptions:
    """Everything ``trio-backtest run`` was asked to do."""

    url: str | None = None
    """A hosted control URL; ``None`` starts the embedded local server."""
    api_key: str | None = attrs.field(default=None, repr=False)
    start_slot: int = DEFAULT_START_SLOT
    end_slot: int = DEFAULT_START_SLOT + DEFAULT_SLOT_COUNT
    stride: int = DEFAULT_STRIDE
    """Slots per ``continue``."""
    transactions: tuple[str, ...] | None = None
    """Program ids to follow; ``None``: the embedded server's first two programs."""
    account_diffs: tuple[str, ...] | None = None
    """Programs whose account diffs to follow; ``None``: the embedded server's first."""
    parallel: bool = False
    disconnect_timeout: int | None = DEFAULT_DISCONNECT_TIMEOUT
    jsonl: Path | None = None
    seed: int = 0
    chaos_drop_probability: float = 0.0
    chaos_seed: int = 0
    transport: Transport = "trio-websocket"
    """The WebSocket library of the connections."""
    debug: bool = False


@final
@attrs.define
class RunProgress:
    """What the display shows of one session (or sub-session)."""

    name: str
    start_slot: int
    end_slot: int
    began: float
    phase: str = "connecting"
    phase_since: float = 0.0
    position: int | None = None
    first_slot_at: float | None = None
    slots_done: int = 0
    transactions_ok: int = 0
    transactions_failed: int = 0
    account_diffs: int = 0
    gaps: int = 0
    reconnects: int = 0
    errors: int = 0
    completed: bool = False
    summary: dict[str, Any] | None = None

    @property
    def total(self) -> int:
        """Slots in the range."""
        return self.end_slot - self.start_slot + 1

    def rate(self, now: float) -> float | None:
        """Slots per second since the session first stood at a slot."""
        if self.first_slot_at is None or self.slots_done == 0:
            return None
        elapsed = now - self.first_slot_at
        return self.slots_done / elapsed if elapsed > 0 else None

    def eta(self, now: float) -> float | None:
        """Seconds left at the current rate."""
        rate = self.rate(now)
        if rate is None or rate <= 0:
            return None
        return (self.total - self.slots_done) / rate

    def on_event(self, event: object, now: float) -> None:
        """Account for one event."""
        match event:
            case Status(status=phase):
                if self.first_slot_at is None:
                    self.phase, self.phase_since = phase, now
            case Slot(slot=slot):
                if self.position is not None and slot > self.position:
                    self.slots_done += 1
                if self.first_slot_at is None:
                    self.first_slot_at = now  # start-up is over: the session stands at a slot
                self.position = slot
                self.phase = "running"
            case Transaction(raw=raw):
                meta = raw.get("meta")
                if isinstance(meta, dict) and meta.get("err") is not None:
                    self.transactions_failed += 1
                else:
                    self.transactions_ok += 1
            case AccountDiff():
                self.account_diffs += 1
            case StreamGap():
                self.gaps += 1
            case ServerError():
                self.errors += 1
            case Completed(summary=summary):
                self.slots_done = self.total
                self.completed = True
                self.phase = "completed"
                self.summary = dict(summary) if summary else None


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "--:--"
    seconds = max(0, int(seconds))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def render_progress(progress: Sequence[RunProgress], now: float) -> RenderableType:
    """The live display: start-up phase, then one bar per session with its counters."""
    table = Table.grid(padding=(0, 1))
    for _ in range(5):
        table.add_column()
    for p in progress:
        if p.first_slot_at is None and not p.completed:
            table.add_row(
                p.name,
                f"[yellow]{p.phase}[/] for {now - p.phase_since:.1f} s",
                "",
                "",
                "",
            )
            continue
        rate = p.rate(now)
        table.add_row(
            p.name,
            ProgressBar(total=p.total, completed=p.slots_done, width=30),
            f"slots {p.slots_done}/{p.total}",
            f"{rate:.1f} slots/s" if rate is not None else "-- slots/s",
            f"ETA {_duration(p.eta(now))}",
        )
    totals = _totals(progress)
    footer = (
        f"transactions {totals['ok'] + totals['failed']} "
        f"(failed {totals['failed']})  account diffs {totals['diffs']}  "
        f"reconnects {totals['reconnects']}  gaps {totals['gaps']}"
    )
    return Group(table, footer)


def render_plain(progress: Sequence[RunProgress], now: float) -> str:
    """One log line for output that is not a terminal."""
    parts = []
    for p in progress:
        if p.first_slot_at is None and not p.completed:
            parts.append(f"{p.name}: {p.phase} for {now - p.phase_since:.1f} s")
        else:
            rate = p.rate(now)
            shown = f"{rate:.1f} slots/s" if rate is not None else "-- slots/s"
            parts.append(f"{p.name}: slots {p.slots_done}/{p.total}, {shown}")
    totals = _totals(progress)
    parts.append(
        f"transactions {totals['ok'] + totals['failed']}, account diffs {totals['diffs']}, "
        f"reconnects {totals['reconnects']}"
    )
    return "; ".join(parts)


def _totals(progress: Sequence[RunProgress]) -> dict[str, int]:
    return {
        "ok": sum(p.transactions_ok for p in progress),
        "failed": sum(p.transactions_failed for p in progress),
        "diffs": sum(p.account_diffs for p in progress),
        "reconnects": sum(p.reconnects for p in progress),
        "gaps": sum(p.gaps for p in progress),
        "slots": sum(p.slots_done for p in progress),
    }


def summary_table(
    progress: Sequence[RunProgress], duration: float, *, interrupted: bool = False
) -> Table:
    """The table printed at the end of a run (or of what ran, when interrupted)."""
    totals = _totals(progress)
    title = "backtest summary (interrupted)" if interrupted else "backtest summary"
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("slots", str(totals["slots"]))
    table.add_row("transactions ok", str(totals["ok"]))
    table.add_row("transactions failed", str(totals["failed"]))
    table.add_row("account diffs", str(totals["diffs"]))
    table.add_row("reconnects", str(totals["reconnects"]))
    table.add_row("gaps", str(totals["gaps"]))
    table.add_row("duration", f"{duration:.1f} s")
    return table


@final
class _Jsonl:
    """``--jsonl``: a header, one line per notification, a trailer only on completion."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(record) + b"\n")

    def notification(self, session: str, event: object) -> None:
        match event:
            case Transaction(slot=slot, signature=sig, raw=raw):
                self.write(
                    {
                        "type": "transaction",
                        "session": session,
                        "slot": slot,
                        "signature": sig,
                        "raw": raw,
                    }
                )
            case AccountDiff(slot=slot, signature=sig, account=account, raw=raw):
                self.write(
                    {
                        "type": "accountDiff",
                        "session": session,
                        "slot": slot,
                        "signature": sig,
                        "account": account,
                        "raw": raw,
                    }
                )
            case StreamGap(subscription=sub, from_slot=a, to_slot=b):
                self.write(
                    {
                        "type": "gap",
                        "session": session,
                        "subscription": sub,
                        "fromSlot": a,
                        "toSlot": b,
                    }
                )


@asynccontextmanager
async def _target(options: RunOptions) -> AsyncIterator[tuple[str, str, Any]]:
    """The control URL, key and connector-free target: the hosted URL or an embedded server."""
    if options.url is not None:
        if not options.api_key:
            raise ValueError("a hosted URL needs --api-key or SIMULATOR_API_KEY")
        await _preflight(options.url, options.api_key, ClientConfig())
        yield options.url, options.api_key, None
        return
    chaos = (options.chaos_drop_probability, options.chaos_seed)
    async with _embedded(options.seed, *chaos) as (key, server):
        yield server.url, key, server


@asynccontextmanager
async def _embedded(
    seed: int, chaos_drop_probability: float = 0.0, chaos_seed: int = 0
) -> AsyncIterator[tuple[str, Any]]:
    """An in-process local server with a one-off API key: ``(key, server)``."""
    from .server import ChaosConfig, open_local_server

    chaos = None
    if chaos_drop_probability:
        chaos = ChaosConfig(seed=chaos_seed, drop_probability=chaos_drop_probability)
    key = secrets.token_urlsafe(16)
    # No delivery record: a long run must not grow the server's memory.
    async with open_local_server(api_keys=(key,), seed=seed, chaos=chaos, record=False) as server:
        yield key, server


async def _preflight(url: str, key: str, config: ClientConfig) -> None:
    """Fail fast, with one clear line, when the URL or the key is wrong.

    The managed client retries an unreachable server for minutes, as it should mid-run;
    a command that was given a typo should say so at once.
    """
    check_transport_security(url, config)
    try:
        with trio.fail_after(config.connect_timeout):
            async with trio.open_nursery() as nursery:
                ws = await websocket_connector(
                    nursery,
                    url,
                    headers=[("X-API-Key", key)],
                    max_message_size=config.max_message_size,
                    ssl_context=config.ssl_context,
                )
                await discard(ws)
    except BaseException as exc:
        cause = cause_of(_single_error(exc))
        if cause is None:
            raise
        if cause.code in (401, 403):
            raise ManagedSessionError(f"{url} refused the API key ({cause})") from None
        raise ManagedSessionError(f"cannot reach {url}: {cause}") from None


def _single_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _subscriptions(options: RunOptions, server: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    programs: tuple[str, ...] = server.ledger.programs if server is not None else ()
    transactions = options.transactions if options.transactions is not None else programs[:2]
    diffs = options.account_diffs if options.account_diffs is not None else programs[:1]
    return tuple(transactions), tuple(diffs)


async def _drive(
    session: ManagedBacktestSession,
    progress: RunProgress,
    options: RunOptions,
    subscriptions: tuple[tuple[str, ...], tuple[str, ...]],
    jsonl: _Jsonl | None,
) -> None:
    transactions, diffs = subscriptions
    subscribed = trio.Event()

    async def subscribe() -> None:
        if transactions:
            await session.subscribe_transactions(transactions)
        if diffs:
            await session.subscribe_account_diffs(diffs, address_type="program")
        subscribed.set()

    name = session.info.session_id
    async with trio.open_nursery() as nursery:
        # Events are shown while the subscriptions are made: a cold hosted session keeps
        # reporting its start-up phases, and its data plane may answer only once warm.
        nursery.start_soon(subscribe)
        async for event in session.events():
            progress.on_event(event, trio.current_time())
            if jsonl is not None and isinstance(event, Transaction | AccountDiff | StreamGap):
                jsonl.notification(name, event)
            if isinstance(event, ReadyForContinue):
                await subscribed.wait()  # nothing executes before every stream is up
                await session.send_continue(ContinueParams(advance_count=options.stride))
            elif isinstance(event, ServerError):
                raise ManagedSessionError(f"the server reported an error: {event.message}")
        _count_reconnects(session, progress)


async def _watch_reconnects(session: ManagedBacktestSession, progress: RunProgress) -> None:
    """Keep the display's reconnect count current, for every connection of the session
    (subscriptions are made while this runs)."""
    while True:
        _count_reconnects(session, progress)
        await trio.sleep(REFRESH)


def _count_reconnects(session: ManagedBacktestSession, progress: RunProgress) -> None:
    progress.reconnects = sum(session.statistics().reconnects.values())


async def _show(progress: list[RunProgress], console: Console, stop: trio.Event) -> None:
    # Nothing to show before a session exists: zero counts would say the run has begun,
    # and a target that cannot be reached is reported in one line instead.
    while not progress and not stop.is_set():
        with trio.move_on_after(REFRESH):
            await stop.wait()
    if stop.is_set():
        return
    if console.is_terminal:
        with Live(
            render_progress(progress, trio.current_time()),
            console=console,
            refresh_per_second=4,
            transient=True,
        ) as live:
            while not stop.is_set():
                with trio.move_on_after(REFRESH):
                    await stop.wait()
                live.update(render_progress(progress, trio.current_time()))
    else:
        while not stop.is_set():
            with trio.move_on_after(PLAIN_EVERY):
                await stop.wait()
            if not stop.is_set():
                line = render_plain(progress, trio.current_time())
                console.print(line, highlight=False, soft_wrap=True)


async def _single(
    url: str,
    key: str,
    create: CreateSessionParams,
    options: RunOptions,
    subscriptions: tuple[tuple[str, ...], tuple[str, ...]],
    progress: list[RunProgress],
    jsonl: _Jsonl | None,
    config: ClientConfig,
) -> None:
    now = trio.current_time()
    progress.append(
        RunProgress("session", create.start_slot, create.end_slot, now, phase_since=now)
    )
    async with open_backtest_session(url, key, create, config=config) as session:
        if jsonl is not None:
            jsonl.write(
                {
                    "type": "header",
                    "params": _params(options, create),
                    "session": session.info.session_id,
                }
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_reconnects, session, progress[0])
            await _drive(session, progress[0], options, subscriptions, jsonl)
            nursery.cancel_scope.cancel()


async def _parallel(
    url: str,
    key: str,
    create: CreateSessionParams,
    options: RunOptions,
    subscriptions: tuple[tuple[str, ...], tuple[str, ...]],
    progress: list[RunProgress],
    jsonl: _Jsonl | None,
    config: ClientConfig,
) -> None:
    async with open_parallel_session(url, key, create, config=config) as batch:
        now = trio.current_time()
        for i, sub in enumerate(batch.sub_sessions):
            # An older server does not say how it split the range: show the whole range.
            start, end = sub.range or (create.start_slot, create.end_slot)
            progress.append(RunProgress(f"sub {i}", start, end, now, phase_since=now))
        if jsonl is not None:
            jsonl.write(
                {
                    "type": "header",
                    "params": _params(options, create),
                    "session": batch.control_session_id,
                    "subSessions": [s.info.session_id for s in batch.sub_sessions],
                }
            )
        async with trio.open_nursery() as nursery:
            for sub, p in zip(batch.sub_sessions, progress, strict=True):
                nursery.start_soon(_watch_reconnects, sub, p)

            async def one(sub: Any, p: RunProgress) -> None:
                await _drive(sub, p, options, subscriptions, jsonl)

            async with trio.open_nursery() as drivers:
                for sub, p in zip(batch.sub_sessions, progress, strict=True):
                    drivers.start_soon(one, sub, p)
            nursery.cancel_scope.cancel()


def _params(options: RunOptions, create: CreateSessionParams) -> dict[str, Any]:
    return {
        "url": options.url or "embedded",
        "startSlot": create.start_slot,
        "endSlot": create.end_slot,
        "stride": options.stride,
        "parallel": options.parallel,
        "disconnectTimeoutSecs": create.disconnect_timeout_secs,
    }


async def run(
    options: RunOptions,
    console: Console,
    *,
    install_signal_handler: bool = True,
    on_progress: Callable[[list[RunProgress]], None] | None = None,
    error_console: Console | None = None,
) -> int:
    """Run one backtest as ``options`` says; return the process exit code.

    0 when the run completed, 1 on an error (one line on the console), 2 for a
    ``--jsonl`` file that cannot be written (before anything starts), 130 when
    interrupted (after a graceful shutdown bounded by the close timeout, and the
    summary of what ran).
    """
    began_wall = time.monotonic()
    progress: list[RunProgress] = []
    if on_progress is not None:
        on_progress(progress)
    errors = error_console or Console(stderr=True)
    try:
        jsonl_file = options.jsonl.open("wb") if options.jsonl is not None else None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        errors.print(f"[red]error:[/] cannot write --jsonl {options.jsonl}: {reason}", **_LINE)
        return 2
    jsonl = _Jsonl(jsonl_file) if jsonl_file is not None else None
    stop = trio.Event()
    subscribed: list[str] = []
    code = 0
    try:
        with unwrap_single():
            await _run_all(
                options, console, install_signal_handler, progress, jsonl, stop, subscribed
            )
    except (ManagedSessionError, ValueError, OSError) as exc:
        stop.set()
        if options.debug:
            errors.print_exception()
        errors.print(f"[red]error:[/] {exc}", **_LINE)
        return 1
    except _Interrupted:
        code = 130
    finally:
        if jsonl_file is not None:
            jsonl_file.close()
    console.print(summary_table(progress, time.monotonic() - began_wall, interrupted=code != 0))
    if progress and not subscribed:
        console.print(NOTHING_SUBSCRIBED, **_LINE)
    return code


#: Console.print options for one plain line.
_LINE: Final[dict[str, Any]] = {"highlight": False, "soft_wrap": True}

NOTHING_SUBSCRIBED: Final = (
    "hint: nothing was subscribed, so no transactions or account diffs were counted; "
    "follow programs with --subscribe-transactions PROGRAM_ID ... and the accounts they "
    "own with --subscribe-account-diffs PROGRAM_ID ..."
)


class _Interrupted(Exception):
    """Ctrl-C arrived; the session was closed gracefully."""


async def _run_all(
    options: RunOptions,
    console: Console,
    install_signal_handler: bool,
    progress: list[RunProgress],
    jsonl: _Jsonl | None,
    stop: trio.Event,
    subscribed: list[str],
) -> None:
    interrupted = False
    async with trio.open_nursery() as nursery:
        if install_signal_handler:

            async def on_sigint() -> None:
                nonlocal interrupted
                with trio.open_signal_receiver(signal.SIGINT) as signals:
                    async for _ in signals:
                        interrupted = True
                        console.print("interrupted: closing the session", highlight=False)
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(on_sigint)
        nursery.start_soon(_show, progress, console, stop)
        async with _target(options) as (url, key, server):
            create = CreateSession(
                start_slot=options.start_slot,
                end_slot=options.end_slot,
                disconnect_timeout_secs=options.disconnect_timeout,
                send_summary=True,
            )
            subscriptions = _subscriptions(options, server)
            subscribed += [*subscriptions[0], *subscriptions[1]]
            config = ClientConfig(allow_insecure=False, transport=options.transport)
            runner = _parallel if options.parallel else _single
            await runner(url, key, create, options, subscriptions, progress, jsonl, config)
        stop.set()
        if jsonl is not None:
            summaries = [p.summary for p in progress]
            jsonl.write(
                {
                    "type": "summary",
                    "completed": True,
                    "sessions": summaries,
                    **{k: v for k, v in _totals(progress).items()},
                }
            )
        nursery.cancel_scope.cancel()
    if interrupted:
        raise _Interrupted


def default_console() -> Console:
    """The console the command writes to (standard output)."""
    return Console(file=sys.stdout)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_target(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--url", help="a hosted control URL (default: an embedded local server)")
    # No default here: --help would print the key from the environment.
    target.add_argument("--api-key", help=f"the API key for --url (default: ${API_KEY_VARIABLE})")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-backtest run``."""
    _add_target(parser)
    span = parser.add_argument_group("range")
    span.add_argument("--start-slot", type=int, default=DEFAULT_START_SLOT, help="first slot")
    ends = span.add_mutually_exclusive_group()
    ends.add_argument(
        "--end-slot",
        type=int,
        help=f"last slot, inclusive (default: start slot + {DEFAULT_SLOT_COUNT})",
    )
    ends.add_argument("--slot-count", type=int, help="end slot = start slot + N")
    span.add_argument("--stride", type=int, default=DEFAULT_STRIDE, help="slots per continue")
    subs = parser.add_argument_group("subscriptions")
    subs.add_argument(
        "--subscribe-transactions",
        nargs="*",
        metavar="PROGRAM",
        help="programs whose transactions to count (default: none for --url, the embedded "
        "server's first two programs otherwise)",
    )
    subs.add_argument(
        "--subscribe-account-diffs",
        nargs="*",
        metavar="PROGRAM",
        help="programs whose accounts' diffs to count (default: none for --url, the embedded "
        "server's first program otherwise)",
    )
    parser.add_argument("--parallel", action="store_true", help="run as a parallel batch")
    parser.add_argument(
        "--disconnect-timeout",
        type=int,
        default=DEFAULT_DISCONNECT_TIMEOUT,
        help="seconds the server keeps the session after a control drop (0: not resumable)",
    )
    parser.add_argument("--jsonl", type=Path, help="write every notification to this file")
    parser.add_argument("--seed", type=int, default=0, help="embedded server's ledger seed")
    parser.add_argument(
        "--chaos-drop-probability",
        type=float,
        default=0.0,
        help="embedded server: chance that a sent message is followed by a dropped socket",
    )
    parser.add_argument(
        "--chaos-seed", type=int, default=0, help="embedded server: seed of the chaos faults"
    )
    parser.add_argument(
        "--transport",
        choices=get_args(Transport),
        default="trio-websocket",
        help="the WebSocket library (websockets needs: pip install 'trio-backtest[websockets]')",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logging")


def options_from(args: argparse.Namespace) -> RunOptions:
    """`RunOptions` from parsed arguments.

    Raises:
        ValueError: inconsistent arguments.
    """
    if args.slot_count is not None:
        end = args.start_slot + args.slot_count
    elif args.end_slot is not None:
        end = args.end_slot
    else:
        end = args.start_slot + DEFAULT_SLOT_COUNT
    if end < args.start_slot:
        raise ValueError("the end slot is before the start slot")
    if args.stride < 1:
        raise ValueError("--stride must be at least 1")
    return RunOptions(
        url=args.url,
        api_key=_api_key(args),
        start_slot=args.start_slot,
        end_slot=end,
        stride=args.stride,
        transactions=None
        if args.subscribe_transactions is None
        else tuple(args.subscribe_transactions),
        account_diffs=None
        if args.subscribe_account_diffs is None
        else tuple(args.subscribe_account_diffs),
        parallel=args.parallel,
        disconnect_timeout=args.disconnect_timeout or None,
        jsonl=args.jsonl,
        seed=args.seed,
        chaos_drop_probability=args.chaos_drop_probability,
        chaos_seed=args.chaos_seed,
        transport=args.transport,
        debug=args.debug,
    )


def _api_key(args: argparse.Namespace) -> str | None:
    key: str | None = args.api_key or os.environ.get(API_KEY_VARIABLE)
    return key


def _configure_logging(debug: bool) -> None:
    """Debug: every record on stderr. Otherwise none: an error reaches the user once, as
    the command's own ``error:`` line, not also as the log record of the task that saw it."""
    if debug:
        logging.basicConfig(level=logging.DEBUG)
    else:
        logging.getLogger().addHandler(logging.NullHandler())


def _usage_error(text: str) -> int:
    Console(stderr=True).print(f"[red]error:[/] {text}", **_LINE)
    return 2


def main_run(args: argparse.Namespace) -> int:
    """``trio-backtest run``: the exit code."""
    console = default_console()
    try:
        options = options_from(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    _configure_logging(options.debug)
    return trio.run(run, options, console)


# ---------------------------------------------------------------- trio-backtest ranges


def add_ranges_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``trio-backtest ranges``."""
    _add_target(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the ranges as one JSON array (wire keys)"
    )
    parser.add_argument("--seed", type=int, default=0, help="embedded server's ledger seed")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logging")


async def list_ranges(
    url: str | None,
    api_key: str | None,
    console: Console,
    *,
    seed: int = 0,
    as_json: bool = False,
    debug: bool = False,
    error_console: Console | None = None,
) -> int:
    """Print the available ranges of ``url`` (``None``: an embedded server); the exit code."""
    errors = error_console or Console(stderr=True)
    try:
        if url is None:
            async with _embedded(seed) as (key, server):
                ranges = await available_ranges(server.url, key)
        elif not api_key:
            errors.print(f"[red]error:[/] a hosted URL needs --api-key or {API_KEY_VARIABLE}")
            return 2
        else:
            ranges = await available_ranges(url, api_key)
    except (ManagedSessionError, ValueError, OSError) as exc:
        if debug:
            errors.print_exception()
        errors.print(f"[red]error:[/] {exc}", **_LINE)
        return 1
    if as_json:
        listing = [
            {
                "bundleStartSlot": r.bundle_start_slot,
                "maxBundleEndSlot": r.max_bundle_end_slot,
                "snapshotSlot": r.snapshot_slot,
                **r.extra,
            }
            for r in ranges
        ]
        console.print_json(orjson.dumps(listing).decode())
        return 0
    table = Table(title=f"available ranges of {url or 'the embedded server'}")
    table.add_column("bundle start slot", justify="right")
    table.add_column("max bundle end slot", justify="right")
    table.add_column("snapshot slot", justify="right")
    for r in ranges:
        table.add_row(str(r.bundle_start_slot), str(r.max_bundle_end_slot), str(r.snapshot_slot))
    console.print(table if ranges else "no ranges available")
    return 0


def main_ranges(args: argparse.Namespace) -> int:
    """``trio-backtest ranges``: the exit code."""
    _configure_logging(args.debug)
    return trio.run(
        functools.partial(
            list_ranges,
            args.url,
            _api_key(args),
            default_console(),
            seed=args.seed,
            as_json=args.json,
            debug=args.debug,
        )
    )
