"""The command as a user meets it: --version, --help, one line per failure, hints, banners."""

from __future__ import annotations

import argparse
import functools
import io
import sys
from importlib.metadata import version

import pytest
import trio
from rich.console import Console

from tests.conftest import SECRET_KEY
from trio_backtest._run import NOTHING_SUBSCRIBED, REFRESH, RunOptions, RunProgress, _show, run
from trio_backtest.cli import _announce, build_parser, main
from trio_backtest.protocol import KNOWN_STATUSES
from trio_backtest.server import open_local_server

#: Hang bound for a child process or a run; no test asserts how long anything takes.
BOUND = 60


def _consoles() -> tuple[Console, Console]:
    return (
        Console(file=io.StringIO(), width=200, record=True),
        Console(file=io.StringIO(), width=200, record=True),
    )


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"trio-backtest {version('trio-backtest')}"


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _options(sub)
    return found


def test_every_option_has_help_and_shows_its_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIMULATOR_API_KEY", SECRET_KEY)
    parser = build_parser()
    options = _options(parser)
    assert len(options) > 30
    assert [a.option_strings for a in options if not a.help] == []
    for command, shown in [
        ("run", ["--start-slot START_SLOT\n", "(default: 1000)", "(default: 25)"]),
        ("ranges", ["(default: $SIMULATOR_API_KEY)"]),
        ("serve", ["(default: 8900)", "(default: 127.0.0.1)", "(default: 1001,1011,1012,1013)"]),
    ]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for fragment in shown:
            assert fragment in text
        assert "(default: None)" not in text
        assert SECRET_KEY not in text  # the key from the environment is never shown


def test_the_key_comes_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from trio_backtest._run import options_from

    monkeypatch.setenv("SIMULATOR_API_KEY", SECRET_KEY)
    args = build_parser().parse_args(["run", "--url", "wss://h/backtest"])
    assert options_from(args).api_key == SECRET_KEY
    args = build_parser().parse_args(["run", "--url", "wss://h/backtest", "--api-key", "given"])
    assert options_from(args).api_key == "given"


def test_an_unwritable_jsonl_is_one_line_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--jsonl", "/no/such/dir/x.jsonl"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: cannot write --jsonl /no/such/dir/x.jsonl: No such file or directory"
    ]


async def test_an_error_is_printed_once() -> None:
    # A separate process: the double print came from the command's logging setup.
    command = [sys.executable, "-m", "trio_backtest.cli", "run", "--parallel"]
    command += ["--disconnect-timeout", "0", "--slot-count", "5"]
    with trio.fail_after(BOUND):
        result = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: session create rejected: InvalidRequest")


async def test_a_hosted_run_with_nothing_subscribed_says_why_it_counted_nothing() -> None:
    out, err = _consoles()
    async with open_local_server(api_keys=(SECRET_KEY,)) as srv:
        options = RunOptions(url=srv.url, api_key=SECRET_KEY, start_slot=0, end_slot=9)
        with trio.fail_after(BOUND):
            assert await run(options, out, install_signal_handler=False, error_console=err) == 0
        text = out.export_text()
        assert "transactions ok" in text
        assert NOTHING_SUBSCRIBED.split(";")[0] in text
        subscribed = RunOptions(
            url=srv.url,
            api_key=SECRET_KEY,
            start_slot=0,
            end_slot=9,
            transactions=srv.ledger.programs[:1],
        )
        out, err = _consoles()
        with trio.fail_after(BOUND):
            assert await run(subscribed, out, install_signal_handler=False, error_console=err) == 0
        assert "hint" not in out.export_text()


async def test_a_cold_hosted_session_shows_its_start_up_phases() -> None:
    out, err = _consoles()
    runs: list[list[RunProgress]] = []  # the run's own progress list, filled as it goes
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            if runs and runs[0] and runs[0][0].first_slot_at is None:
                seen.add(runs[0][0].phase)
            await trio.sleep(0.05)

    async with open_local_server(api_keys=(SECRET_KEY,), startup_delay=1.0) as srv:
        options = RunOptions(url=srv.url, api_key=SECRET_KEY, start_slot=0, end_slot=4)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with trio.fail_after(BOUND):
                code = await run(
                    options,
                    out,
                    install_signal_handler=False,
                    error_console=err,
                    on_progress=runs.append,
                )
            nursery.cancel_scope.cancel()
    assert code == 0
    assert seen & KNOWN_STATUSES  # a start-up phase was on display while the session was cold


async def test_nothing_is_shown_before_a_session_exists(autojump_clock: trio.abc.Clock) -> None:
    out = Console(file=io.StringIO(), width=200, record=True, force_terminal=False)
    progress: list[RunProgress] = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_show, progress, out, stop)
        await trio.sleep(60)  # twelve times the plain output's period
        assert out.export_text(clear=False) == ""
        progress.append(RunProgress("session", 0, 9, began=trio.current_time()))
        await trio.sleep(6 + REFRESH)
        stop.set()
    assert out.export_text().startswith("session: connecting for ")


async def test_wss_to_a_server_without_tls_is_one_line_and_no_counts() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        out, err = _consoles()
        options = RunOptions(url=f"wss://127.0.0.1:{port}/backtest", api_key=SECRET_KEY)
        with trio.fail_after(BOUND):
            code = await run(options, out, install_signal_handler=False, error_console=err)
        nursery.cancel_scope.cancel()
    assert code == 1
    assert out.export_text() == ""
    (line,) = err.export_text().splitlines()
    assert line.startswith(f"error: cannot reach wss://127.0.0.1:{port}/backtest")
    assert SECRET_KEY not in line


async def test_serve_names_the_programs_and_accounts_to_subscribe_to(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_local_server(api_keys=(SECRET_KEY,), tcp=False, seed=5) as srv:
        _announce(srv)
        programs, accounts = srv.ledger.programs, srv.ledger.accounts
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    for program in programs:
        assert program in lines
    assert accounts[0] in lines
    if len(accounts) > 5:
        assert f"... and {len(accounts) - 5} more (server.ledger.accounts)" in lines
    assert any(line.endswith(f"--subscribe-transactions {programs[0]}") for line in lines)
