"""Run the local server (or another benchmark server) in a separate process."""

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
    config = ServerConfig(api_keys=({key!r},), record=False, ledger=ledger, {options})
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_backtest, config)
        print(server.url, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes stdin
        nursery.cancel_scope.cancel()

trio.run(main)
"""


@contextmanager
def child_process(arguments: list[str]) -> Iterator[tuple[str, int]]:
    """Run ``python ARGUMENTS`` until the block ends; yield the URL it prints first and its pid.

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
            yield url, proc.pid
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def child_server(arguments: list[str]) -> Iterator[str]:
    """`child_process`, yielding only the URL."""
    with child_process(arguments) as (url, _):
        yield url


@contextmanager
def server_child(bundle_size: int = 100, **options: object) -> Iterator[tuple[str, int]]:
    """Start a local server in a child process; yield its control URL and process id.

    ``options`` are further ``ServerConfig`` fields.
    """
    extra = ", ".join(f"{name}={value!r}" for name, value in options.items())
    code = _SERVE.format(key=KEY, bundle=bundle_size, options=extra)
    with child_process(["-c", code]) as found:
        yield found


@contextmanager
def server_process(bundle_size: int = 100) -> Iterator[str]:
    """Start a local server in a child process; yield its control URL."""
    with server_child(bundle_size) as (url, _):
        yield url
