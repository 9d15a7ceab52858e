"""The ``trio-backtest`` command.

Each subcommand registers itself with :func:`build_parser` through an ``_add_<name>``
function and runs through a ``_run_<name>(args) -> int`` function, so new commands slot in
beside ``serve`` without touching it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from . import __version__
from ._run import HelpFormatter, add_ranges_arguments, add_run_arguments, main_ranges, main_run
from .server import ChaosConfig, LedgerConfig, LocalServer, ServerConfig, open_server

__all__ = ["build_parser", "main"]

#: Port ``trio-backtest serve`` listens on unless told otherwise.
DEFAULT_PORT = 8900

Runner = Callable[[argparse.Namespace], int]


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text}")
    return value


def _codes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated close codes, got {text}"
        ) from None


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the local backtest server until Ctrl-C",
        description="Run a local backtest server (synthetic ledger, no network account needed).",
        formatter_class=HelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="TCP port; 0 picks a free one"
    )
    serve.add_argument("--seed", type=int, default=0, help="seed of the synthetic ledger")
    serve.add_argument(
        "--transactions-per-slot",
        type=float,
        default=20.0,
        help="mean transactions per slot (200+ for a firehose)",
    )
    serve.add_argument("--bundle-size", type=int, default=100, help="slots per bundle")
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="an accepted API key (repeatable) (default: local-dev-key)",
    )
    serve.add_argument(
        "--startup-delay", type=float, default=0.0, help="seconds each session spends starting"
    )
    serve.add_argument(
        "--backpressure",
        choices=("block", "drop"),
        default="block",
        help="what a full subscriber queue does",
    )
    serve.add_argument("--snake-case", action="store_true", help="emit inline keys snake_case")
    serve.add_argument(
        "--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING, ...)"
    )
    chaos = serve.add_argument_group("chaos", "random faults, seeded so a run can be repeated")
    chaos.add_argument(
        "--chaos",
        action="store_true",
        help="turn chaos on with defaults: a drop or close every 30 s on average",
    )
    chaos.add_argument("--chaos-seed", type=int, default=0, help="seed of the fault schedule")
    chaos.add_argument(
        "--chaos-drop-probability",
        type=_probability,
        default=0.0,
        help="chance that a sent message is followed by an abrupt loss of its socket",
    )
    chaos.add_argument(
        "--chaos-close-probability",
        type=_probability,
        default=0.0,
        help="chance that a sent message is followed by a close with a random code",
    )
    chaos.add_argument(
        "--chaos-interval",
        type=_positive_float,
        default=None,
        help="mean seconds between random drops/closes of live sockets",
    )
    chaos.add_argument(
        "--chaos-close-codes",
        type=_codes,
        default=(1001, 1011, 1012, 1013),
        help="close codes chaos picks from, comma-separated (default: 1001,1011,1012,1013)",
    )
    chaos.add_argument(
        "--chaos-plane",
        choices=("control", "data", "any"),
        default="any",
        help="sockets chaos applies to",
    )
    serve.set_defaults(run=_run_serve)


def _chaos_of(args: argparse.Namespace) -> ChaosConfig | None:
    interval = args.chaos_interval
    if interval is None and args.chaos:
        interval = 30.0
    chaos = ChaosConfig(
        seed=args.chaos_seed,
        drop_probability=args.chaos_drop_probability,
        close_probability=args.chaos_close_probability,
        mean_interval=interval,
        close_codes=args.chaos_close_codes,
        plane=args.chaos_plane,
    )
    return chaos if chaos.active else None


def _serve_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys or ("local-dev-key",)),
        ledger=LedgerConfig(
            seed=args.seed,
            transactions_per_slot=args.transactions_per_slot,
            bundle_size=args.bundle_size,
        ),
        startup_delay=args.startup_delay,
        snake_case=args.snake_case,
        backpressure=args.backpressure,
        chaos=_chaos_of(args),
        record=False,
    )


#: Accounts the banner lists by name; the rest are counted.
BANNER_ACCOUNTS = 5


def _announce(server: LocalServer) -> None:
    health = server.url.replace("ws://", "http://", 1).rsplit("/backtest", 1)[0] + "/health"
    programs, accounts = server.ledger.programs, server.ledger.accounts
    lines = [
        "trio-backtest local server",
        f"  url:     {server.url}",
        f"  api key: {server.api_key}",
        f"  health:  {health}",
    ]
    if server.config.chaos is not None:
        lines.append(f"  chaos:   {server.config.chaos}")
    lines.append("  programs to subscribe to (transactions, or the account diffs they own):")
    lines += [f"    {program}" for program in programs]
    lines.append("  accounts (account diffs with address_type='account'):")
    lines += [f"    {account}" for account in accounts[:BANNER_ACCOUNTS]]
    if len(accounts) > BANNER_ACCOUNTS:
        lines.append(f"    ... and {len(accounts) - BANNER_ACCOUNTS} more (server.ledger.accounts)")
    if programs:
        lines.append(
            f"  try:     trio-backtest run --url {server.url} --api-key {server.api_key} "
            f"--subscribe-transactions {programs[0]}"
        )
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


async def _serve_until_interrupted(config: ServerConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_server(config) as server:
            _announce(server)
            async for signum in signals:
                print(f"received {signal.Signals(signum).name}, shutting down", flush=True)
                break
    print("stopped", flush=True)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        config = _serve_config(args)
    except ValueError as exc:
        print(f"trio-backtest serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        trio.run(_serve_until_interrupted, config)
    except OSError as exc:
        print(
            f"trio-backtest serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "run",
        help="run one whole backtest and show it live",
        description=(
            "Run a backtest: against an embedded local server by default, or against a "
            "hosted service with --url and --api-key (or SIMULATOR_API_KEY)."
        ),
        formatter_class=HelpFormatter,
    )
    add_run_arguments(run)
    run.set_defaults(run=main_run)


def _add_ranges(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ranges = commands.add_parser(
        "ranges",
        help="list the slot ranges a server can backtest",
        description=(
            "List the available slot ranges: of an embedded local server by default, or of "
            "a hosted service with --url and --api-key (or SIMULATOR_API_KEY)."
        ),
        formatter_class=HelpFormatter,
    )
    add_ranges_arguments(ranges)
    ranges.set_defaults(run=main_ranges)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``trio-backtest`` with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="trio-backtest",
        description="Trio client, local server and fault lab for backtests.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_ranges(commands)
    _add_serve(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trio-backtest`` with ``argv`` (default: the process arguments)."""
    args = build_parser().parse_args(argv)
    run: Runner = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
