"""``trio-backtest serve`` in a separate process: URL and key, /health, a session, SIGINT."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys

import pytest
import trio

from tests.server.wire import Control, tcp_websocket
from trio_backtest.cli import build_parser, main
from trio_backtest.protocol import Completed, CreateSession, ReadyForContinue, Success

_KEY = "cli-test-key"


async def _read_banner(stdout: trio.abc.ReceiveStream) -> dict[str, str]:
    """Lines ``name: value`` of the start-up banner, up to the Ctrl-C hint."""
    text = b""
    while b"Ctrl-C" not in text:
        chunk = await stdout.receive_some()
        assert chunk, f"serve exited early: {text!r}"
        text += chunk
    fields = {}
    for line in text.decode().splitlines():
        name, sep, value = line.strip().partition(": ")
        if sep:
            fields[name] = value.strip()
    return fields


async def test_serve_runs_a_session_and_exits_cleanly_on_sigint() -> None:
    command = [
        sys.executable,
        "-m",
        "trio_backtest.cli",
        "serve",
        "--port",
        "0",
        "--api-key",
        _KEY,
        "--seed",
        "4",
        "--transactions-per-slot",
        "5",
    ]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                check=False,
            )
        )
        assert process.stdout is not None
        with trio.fail_after(30):  # bounds a stuck child; nothing here measures time
            banner = await _read_banner(process.stdout)
            url, key = banner["url"], banner["api key"]
            assert key == _KEY
            assert url.startswith("ws://127.0.0.1:")
            assert url.endswith("/backtest")
            host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert answer.endswith(b"ok")
            async with tcp_websocket(url, [(b"X-API-Key", key.encode())]) as ws:
                control = Control(ws)
                await control.create(CreateSession(start_slot=10, slot_count=4, send_summary=True))
                await control.recv_until(ReadyForContinue)
                await control.send('{"method": "continue", "params": {"advanceCount": 5}}')
                completed = (await control.recv_until(Completed))[-1].message
                assert isinstance(completed, Completed)
                assert completed.summary is not None
                assert completed.summary["slotsExecuted"] == 5
                await control.send('{"method": "closeBacktestSession"}')
                assert (await control.recv_until(Success))[-1].message == Success()
            process.send_signal(signal.SIGINT)
            await process.wait()
            rest = await process.stdout.receive_some()
        assert process.returncode == 0
        assert b"stopped" in rest


def test_the_parser_has_subcommands() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["serve", "--port", "0", "--chaos", "--chaos-close-codes", "1012,1013"]
    )
    assert args.command == "serve"
    assert args.chaos_close_codes == (1012, 1013)
    with pytest.raises(SystemExit):
        parser.parse_args([])


def test_serve_refuses_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--bundle-size", "0"]) == 2
    assert "bundle_size" in capsys.readouterr().err
