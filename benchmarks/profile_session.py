"""Where a managed session's CPU goes per notification: cProfile's top entries.

Streams one session from the firehose server (in its own process) under cProfile and
prints the functions with the most time of their own, as microseconds per notification.
Not run by ``nox -s bench``; it guides work on the data path.

    python -m benchmarks.profile_session [trio-websocket|websockets] [slots] [rows]
"""

from __future__ import annotations

import cProfile
import pstats
import sys

import trio

from benchmarks._firehose import firehose_process
from benchmarks.bench_session import managed


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "websockets"
    slots = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    with firehose_process(slots=slots) as url:
        profiler = cProfile.Profile()
        run = profiler.runcall(trio.run, managed(transport), url, slots)
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in entries.values())
    print(f"managed session on {transport}: {run.count} notifications, profiled")
    print(f"  {total / run.count * 1e6:.1f} us per notification under the profiler (all code)")
    print("  by module (own time, us per notification):")
    modules: dict[str, float] = {}
    for (path, _, name), (_, _, tottime, _, _) in entries.items():
        key = _module(path, name)
        modules[key] = modules.get(key, 0.0) + tottime
    for key, tottime in sorted(modules.items(), key=lambda item: -item[1])[:12]:
        print(f"  {tottime / run.count * 1e6:12.2f}  {key}")
    print("  top functions (a coroutine's every resumption counts as a call):")
    print(f"  {'own us/notif':>12} {'calls/notif':>11}  function")
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    for (path, line, name), (_, calls, tottime, _, _) in ranked[:rows]:
        where = path.split("site-packages/")[-1].split("/wt-bench/")[-1]
        own, per = tottime / run.count * 1e6, calls / run.count
        print(f"  {own:12.2f} {per:11.2f}  {name} ({where}:{line})")


def _module(path: str, name: str) -> str:
    """A short name for where a function lives: a package, or one of our modules."""
    if path == "~":
        return f"builtins ({name.split(' of ')[0].strip('<>')})"
    tail = path.split("site-packages/")[-1].split("/wt-bench/")[-1]
    parts = tail.split("/")
    if parts[0] == "trio_backtest" or (parts[0] == "trio" and len(parts) > 2):
        return "/".join([*parts[:-1], parts[-1].removesuffix(".py")])
    return parts[0].removesuffix(".py") if "site-packages" in path else "stdlib " + parts[-1]


if __name__ == "__main__":
    main()
