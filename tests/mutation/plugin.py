"""A pytest plugin for ``nox -s mutation``: let mutmut reach the codec's once-per-process code.

mutmut forks one process per mutant from a process that has already imported the package
and run the tests, and runs each mutant with only the tests that called the mutated
function while it collected its statistics. Code that runs once per process escapes both:
the codec builds its converter and its decoder table at import, and memoises what it
derives per type (its records, and the hooks cattrs builds). So this plugin runs the codec
module again (``importlib.reload``, which re-executes it in the same module object, so the
functions other modules imported read the new converter and tables):

* before each test while mutmut collects statistics, so each test is charged the
  import-time and memoised code it relies on;
* once before the tests of a mutant, so that code runs mutated.
"""

from __future__ import annotations

import importlib

import pytest
from mutmut.mutation.trampoline import get_mutant_under_test

from trio_backtest.protocol import codec


def _reload_codec() -> None:
    importlib.reload(codec)


def pytest_sessionstart(session: pytest.Session) -> None:
    """In a mutant's process, build the codec's converter and tables with the mutant."""
    if get_mutant_under_test().startswith("trio_backtest."):
        _reload_codec()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """While mutmut collects statistics, charge the codec's set-up to every test."""
    if get_mutant_under_test() == "stats":
        _reload_codec()
