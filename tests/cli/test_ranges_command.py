"""``trio-backtest ranges``: the embedded server's ranges, a hosted one's, and its errors."""

from __future__ import annotations

import io
import json

import trio
from rich.console import Console

from tests.conftest import SECRET_KEY
from trio_backtest._run import list_ranges
from trio_backtest.server import open_local_server

BOUND = 60


def _consoles() -> tuple[Console, Console]:
    return (
        Console(file=io.StringIO(), width=200, record=True),
        Console(file=io.StringIO(), width=200, record=True),
    )


async def test_the_embedded_server_s_ranges_as_a_table_and_as_json() -> None:
    out, err = _consoles()
    with trio.fail_after(BOUND):
        assert await list_ranges(None, None, out, error_console=err) == 0
    text = out.export_text()
    assert "bundle start slot" in text
    rows = [line.split("│")[1:4] for line in text.splitlines() if "│" in line]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert cells[:2] == [["0", "99", "0"], ["100", "199", "100"]]
    assert len(cells) == 100  # the local server's default listing
    with trio.fail_after(BOUND):
        assert await list_ranges(None, None, out, as_json=True, error_console=err) == 0
    listing = json.loads(out.export_text())
    assert listing[0] == {"bundleStartSlot": 0, "maxBundleEndSlot": 99, "snapshotSlot": 0}
    assert err.export_text() == ""


async def test_a_hosted_server_with_a_good_key_a_bad_key_and_no_key() -> None:
    async with open_local_server(api_keys=(SECRET_KEY,)) as srv:
        out, err = _consoles()
        with trio.fail_after(BOUND):
            assert await list_ranges(srv.url, SECRET_KEY, out, as_json=True) == 0
        assert len(json.loads(out.export_text())) == 100
        out, err = _consoles()
        with trio.fail_after(BOUND):
            assert await list_ranges(srv.url, "not-the-key", out, error_console=err) == 1
        assert out.export_text() == ""
        (line,) = err.export_text().splitlines()
        assert line.endswith("refused the API key (HTTP 401)")
        out, err = _consoles()
        assert await list_ranges(srv.url, None, out, error_console=err) == 2
        assert "needs --api-key or SIMULATOR_API_KEY" in err.export_text()
