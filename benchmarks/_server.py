"""Run the local server in a separate process for the benchmarks."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

KEY = "bench-key"

_SERVE = """
import sys, trio
from trio_backtest.server import ServerConfig, LedgerConfig, serve_backtest

async def main():
    ledger = LedgerConfig(seed=1, bundle_size={bundle})
    config = ServerConfig(api_keys=({key!r},), record=False, ledger=ledger)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_backtest, config)
        print(server.url, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        nursery.cancel_scope.cancel()

trio.run(main)
"""


@contextmanager
def child_server(arguments: list[str]) -> Iterator[str]:
    """Run ``python ARGUMENTS`` until the block ends; yield the URL it prints first.

    The child serves until its stdin closes.
    """
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    with subprocess.Popen([sys.executable, *arguments], text=True, **pipes) as proc:  # type: ignore[call-overload]
        assert proc.stdout is not None
        assert proc.stdin is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("ws://"):
            proc.kill()
            raise RuntimeError(f"the server did not start: {url!r}")
        try:
            yield url
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def server_process(bundle_size: int = 100) -> Iterator[str]:
    """Start a local server in a child process; yield its control URL."""
    with child_server(["-c", _SERVE.format(key=KEY, bundle=bundle_size)]) as url:
        yield url
