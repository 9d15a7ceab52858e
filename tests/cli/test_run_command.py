"""``trio-backtest run`` as a user runs it: a separate process, real sockets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from tests.conftest import SECRET_KEY
from trio_backtest.server import Ledger, LedgerConfig, open_local_server

RUN = [sys.executable, "-m", "trio_backtest.cli", "run"]
#: Hang bound for a child process; no test asserts how long a run takes.
BOUND = 90


async def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(BOUND):
        return await trio.run_process(
            [*RUN, *args], capture_stdout=True, capture_stderr=True, check=False
        )


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _summary_value(stdout: bytes, label: str) -> int:
    for line in stdout.decode().splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 4 and cells[1] == label:  # a row of the summary table
            return int(cells[2])
    raise AssertionError(f"no {label!r} in the summary")


async def test_run_to_completion_with_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = await _run("--start-slot", "0", "--slot-count", "59", "--jsonl", str(out))
    assert result.returncode == 0, result.stderr
    records = _records(out)
    assert records[0]["type"] == "header"
    assert records[-1]["type"] == "summary"
    kinds = [r["type"] for r in records[1:-1]]
    ok = _summary_value(result.stdout, "transactions ok")
    failed = _summary_value(result.stdout, "transactions failed")
    diffs = _summary_value(result.stdout, "account diffs")
    assert kinds.count("transaction") == ok + failed
    assert kinds.count("accountDiff") == diffs
    assert len(records) == ok + failed + diffs + 2
    assert _summary_value(result.stdout, "slots") == 60


async def test_the_websockets_transport_streams_the_same_run(tmp_path: Path) -> None:
    runs = {}
    for transport in ("trio-websocket", "websockets"):
        out = tmp_path / f"{transport}.jsonl"
        args = ("--slot-count", "29", "--transport", transport, "--jsonl", str(out))
        result = await _run(*args)
        assert result.returncode == 0, result.stderr
        # Every record but the header, without the (random) session id.
        runs[transport] = [
            {k: v for k, v in r.items() if k != "session"}
            for r in _records(out)
            if r["type"] != "header"
        ]
    # Each subscription's stream is the same, in the same order (how the two streams
    # interleave with each other depends on timing).
    for kind in ("transaction", "accountDiff", "summary"):
        streams = [[r for r in run if r["type"] == kind] for run in runs.values()]
        assert streams[0] == streams[1], kind
        assert streams[0], kind


async def test_parallel_run_has_one_line_per_notification(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = await _run(
        "--start-slot", "0", "--slot-count", "299", "--parallel", "--jsonl", str(out)
    )
    assert result.returncode == 0, result.stderr
    records = _records(out)
    header = records[0]
    assert header["type"] == "header"
    assert len(header["subSessions"]) == 3  # type: ignore[arg-type]
    sessions = {r["session"] for r in records[1:-1]}
    assert sessions == set(header["subSessions"])  # type: ignore[arg-type]
    assert _summary_value(result.stdout, "slots") == 300


async def test_run_under_chaos_completes_with_nothing_lost(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    result = await _run(
        "--start-slot", "0", "--slot-count", "119", "--stride", "20",
        "--chaos-drop-probability", "0.002", "--chaos-seed", "3", "--jsonl", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _summary_value(result.stdout, "reconnects") > 0  # the faults really fired
    ledger = Ledger(LedgerConfig(seed=0))
    programs = ledger.programs[:2]
    expected_txs = {
        tx.signature
        for s in range(120)
        for tx in ledger.slot(s).transactions
        if any(tx.mentions(p) for p in programs)
    }
    expected_diffs = {
        (d.signature, d.account)
        for s in range(120)
        for d in ledger.slot(s).diffs
        if d.matches(ledger.programs[0], "program")
    }
    records = _records(out)
    txs = [r["signature"] for r in records if r["type"] == "transaction"]
    diffs = [(r["signature"], r["account"]) for r in records if r["type"] == "accountDiff"]
    assert not [r for r in records if r["type"] == "gap"]
    assert len(txs) == len(set(txs))
    assert set(txs) == expected_txs
    assert len(diffs) == len(set(diffs))
    assert set(diffs) == expected_diffs
    assert records[-1]["type"] == "summary"


async def test_a_bad_url_is_one_clear_line() -> None:
    result = await _run("--url", "ws://127.0.0.1:9/backtest", "--api-key", "k")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach ws://127.0.0.1:9/backtest")
    assert b"Traceback" not in result.stdout + result.stderr


async def test_a_bad_key_is_one_clear_line() -> None:
    async with open_local_server(api_keys=(SECRET_KEY,)) as srv:
        result = await _run("--url", srv.url, "--api-key", "not-the-key")
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "refused the API key" in lines[0]
    assert "401" in lines[0]
    assert "not-the-key" not in lines[0]


async def test_sigint_mid_run_closes_the_session_and_exits_130() -> None:
    async with open_local_server(api_keys=(SECRET_KEY,)) as srv:
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                command = [*RUN, "--url", srv.url, "--api-key", SECRET_KEY]
                command += ["--start-slot", "0", "--slot-count", "1000000", "--stride", "5"]
                start = partial(
                    trio.run_process,
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    check=False,
                )
                proc = await nursery.start(start)
                # Wait until the run is under way, then press Ctrl-C. A second stride (slot
                # 5 on) runs only after the command took the first stride's events and its
                # ready, so by then it has counted slots. The other process gives no event
                # to wait on, so look every 50 ms.
                while not any(  # noqa: ASYNC110
                    len(srv.executed_slots(s)) > 5 for s in srv.session_ids()
                ):
                    await trio.sleep(0.05)
                (session_id,) = srv.session_ids()
                proc.send_signal(signal.SIGINT)
                code = await proc.wait()
                output = b""
                while chunk := await proc.stdout.receive_some():
                    output += chunk
        assert code == 130
        assert b"interrupted: closing the session" in output
        # Then the summary of what ran.
        assert b"backtest summary (interrupted)" in output
        assert _summary_value(output, "slots") >= 1
        assert srv.session_state(session_id) is None  # the session was closed
