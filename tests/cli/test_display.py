"""The live display and the summary, looked at as a person would see them."""

from __future__ import annotations

import io
from pathlib import Path

import trio
from rich.console import Console

from trio_backtest import Completed, Slot, Status, Transaction
from trio_backtest._run import (
    RunOptions,
    RunProgress,
    render_plain,
    render_progress,
    run,
    summary_table,
)


def _screen(renderable: object, tmp_path: Path) -> str:
    """Render as a terminal would, save the screen to a file, and read it back."""
    console = Console(record=True, width=110, file=io.StringIO(), force_terminal=True)
    console.print(renderable)
    screen = tmp_path / "screen.txt"
    console.save_text(str(screen))
    return screen.read_text()


def _progress() -> RunProgress:
    p = RunProgress("session", 1_000, 1_299, began=0.0, phase_since=0.0)
    p.on_event(Status("preparingBundle"), now=0.5)
    return p


def test_start_up_shows_the_phase_and_how_long_it_lasted(tmp_path: Path) -> None:
    p = _progress()
    text = _screen(render_progress([p], now=3.75), tmp_path)
    assert "preparingBundle for 3.2 s" in text  # since 0.5 s
    p.on_event(Status("startingRuntime"), now=4.0)
    text = _screen(render_progress([p], now=10.0), tmp_path)
    assert "startingRuntime for 6.0 s" in text
    assert "preparingBundle" not in text


def test_mid_run_shows_slots_rate_and_eta(tmp_path: Path) -> None:
    p = _progress()
    p.on_event(Slot(1_000), now=5.0)
    for i in range(1, 61):
        p.on_event(Slot(1_000 + i), now=5.0 + i * 0.5)
    raw = {"slot": 1_010, "meta": {"err": None}, "transaction": {"signatures": ["s"]}}
    p.on_event(Transaction(1_010, "s", raw), now=20.0)
    text = _screen(render_progress([p], now=35.0), tmp_path)
    assert "slots 60/300" in text
    assert "2.0 slots/s" in text  # 60 slots in the 30 s since the first one
    assert "ETA 02:00" in text  # 240 slots left at 2 per second
    assert "transactions 1 (failed 0)" in text
    line = render_plain([p], now=35.0)
    assert line.startswith("session: slots 60/300, 2.0 slots/s")


def test_one_bar_per_sub_session(tmp_path: Path) -> None:
    subs = [RunProgress(f"sub {i}", i * 100, i * 100 + 99, 0.0) for i in range(3)]
    for sub in subs:
        sub.on_event(Slot(sub.start_slot), now=1.0)
        sub.on_event(Slot(sub.start_slot + 1), now=2.0)
    text = _screen(render_progress(subs, now=2.0), tmp_path)
    assert [line.split()[:2] for line in text.splitlines()[:3]] == [
        ["sub", "0"],
        ["sub", "1"],
        ["sub", "2"],
    ]
    assert text.count("slots 1/100") == 3


def test_summary_table_counts(tmp_path: Path) -> None:
    p = _progress()
    p.on_event(Slot(1_000), now=1.0)
    failed = {"slot": 1_000, "meta": {"err": {"InstructionError": [0, "Custom"]}}}
    p.on_event(Transaction(1_000, "a", failed), now=1.0)
    p.on_event(Completed({"slotsExecuted": 300}), now=2.0)
    text = _screen(summary_table([p], duration=12.34), tmp_path)
    assert "slots" in text
    assert "300" in text
    assert "transactions failed" in text
    assert "12.3 s" in text


async def test_run_in_process_completes_and_prints_the_summary(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, record=True)
    jsonl = tmp_path / "run.jsonl"
    options = RunOptions(start_slot=0, end_slot=29, stride=10, jsonl=jsonl)
    with trio.fail_after(60):
        code = await run(options, console, install_signal_handler=False)
    assert code == 0
    text = console.export_text()
    assert "backtest summary" in text
    lines = jsonl.read_bytes().splitlines()
    assert lines[0].startswith(b'{"type":"header"')
    assert lines[-1].startswith(b'{"type":"summary"')
