"""Every check of the project, one session each: ``nox -s tests lint typecheck docs bench``.

``nox -s mutation`` (not run by default) mutation-tests the pure modules.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (fast, deterministic, virtual time)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def chaos(session: nox.Session) -> None:
    """The chaos properties and the live state machine with many more examples."""
    session.install("-e", ".[test]")
    env = {
        "TRIO_BACKTEST_CHAOS_EXAMPLES": "2000",
        "TRIO_BACKTEST_STATE_MACHINE_EXAMPLES": "500",
        "TRIO_BACKTEST_CHAOS_REPORT": "1",
    }
    session.run(
        "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/reliability/test_chaos.py",
        "tests/reliability/test_live_state_machine.py", *session.posargs, env=env,
    )  # fmt: skip


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """A long soak over loopback TCP under random chaos (10 minutes by default)."""
    session.install("-e", ".[test]")
    env = {"TRIO_BACKTEST_SOAK_SECONDS": "600", "TRIO_BACKTEST_CHAOS_REPORT": "1"}
    session.run(
        "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/reliability/test_soak.py",
        *session.posargs, env=env,
    )  # fmt: skip


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint with ruff, including the ASYNC rules."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "trio_backtest", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "trio_backtest", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with ``mypy --strict``."""
    session.install("-e", ".[test]", "mypy>=1.11")
    session.run("mypy", "--strict", "trio_backtest")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the user documentation; any warning fails the build."""
    session.install("-e", ".[docs]")
    # mkdocs-material prints a banner about a future MkDocs; it is not a build warning.
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark; print the figures and write them to docs/figures/benchmarks.txt.

    ``bench_session`` also draws docs/figures/cpu_per_notification.png (matplotlib comes
    with the docs extra).
    """
    session.install("-e", ".[test,websockets,docs]")
    figures = [
        "Figures written by `nox -s bench`.",
        f"Machine: {os.cpu_count()} CPU cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.machine()}.",
        "Load average when the run began (1, 5, 15 min): "
        + ", ".join(f"{load:.2f}" for load in os.getloadavg())
        + ".",
        "",
    ]
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        output = session.run(
            "python", "-m", f"benchmarks.{script.stem}", *session.posargs, silent=True
        )
        print(output)
        figures += [f"$ python -m benchmarks.{script.stem}", str(output).rstrip(), ""]
    target = Path("docs/figures/benchmarks.txt")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(figures))


#: The modules `mutation` mutates (pyproject.toml's [tool.mutmut] lists the same files).
MUTATED = {
    "_policy": "trio_backtest/_policy.py",
    "_dedupe": "trio_backtest/_dedupe.py",
    "codec": "trio_backtest/protocol/codec.py",
}
#: mutmut's exit codes of a mutant the tests detected: failed tests, a pytest internal
#: error, or a test run that hit its time limit.
_DETECTED = {1, 3, 24, -24, 36, 152, 255}
#: The ones of those that are time limits, reported apart.
_TIMEOUTS = {24, -24, 36, 152, 255}
#: What the other exit codes mean (mutmut's words; any other is "suspicious").
_UNDETECTED = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", -11: "segfault"}


@nox.session(python=PYTHON)
def mutation(session: nox.Session) -> None:
    """Mutation-test the pure modules with mutmut; print the score of each and its survivors.

    ``nox -s mutation -- _policy`` runs one module (``_policy``, ``_dedupe``, ``codec``).
    Every run starts from a fresh ``mutants/`` directory. ``mutmut show NAME`` (in the
    session's virtualenv) prints a survivor's change.
    """
    session.install("-e", ".[mutation]")
    chosen = session.posargs or list(MUTATED)
    unknown = sorted(set(chosen) - set(MUTATED))
    if unknown:
        session.error(f"unknown module {unknown}; choose from {sorted(MUTATED)}")
    shutil.rmtree("mutants", ignore_errors=True)
    patterns = [MUTATED[name].removesuffix(".py").replace("/", ".") + ".*" for name in chosen]
    # Each codec mutant's process runs the mutated codec (1 MB) again: cache its bytecode.
    session.run("mutmut", "run", *patterns, env={"PYTHONDONTWRITEBYTECODE": ""})
    report = []
    for name in chosen:
        meta = json.loads(Path("mutants", MUTATED[name] + ".meta").read_text())
        codes: dict[str, int | None] = meta["exit_code_by_key"]
        killed = sum(code in _DETECTED for code in codes.values())
        timeouts = sum(code in _TIMEOUTS for code in codes.values())
        report.append(
            f"{name}: {killed} / {len(codes)} killed ({100 * killed / len(codes):.1f} %)"
            + (f", {timeouts} of them by a time limit" if timeouts else "")
        )
        report += [
            f"    {_UNDETECTED.get(code, 'suspicious')}: {mutant}"
            for mutant, code in sorted(codes.items())
            if code not in _DETECTED
        ]
    print("\nMutation scores (docs/guarantees.md says why each survivor is left):")
    print("\n".join(report))
