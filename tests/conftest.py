"""Suite-wide checks: every test runs with DEBUG logging captured, and no record,
anywhere, may contain the API key the tests use."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import pytest

#: The API key every test server accepts; distinctive so a leak is unmistakable.
SECRET_KEY = "sk-test-9f8e7d6c5b4a-never-log-me"


def assert_key_not_in(records: Iterable[logging.LogRecord]) -> None:
    """Fail if any record's message or traceback text contains `SECRET_KEY`."""
    for record in records:
        text = record.getMessage()
        assert SECRET_KEY not in text, f"API key leaked in a log record: {record.name}"
        if record.exc_text:
            assert SECRET_KEY not in record.exc_text, f"API key leaked in: {record.name}"


@pytest.fixture(autouse=True)
def _api_key_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    # ``caplog.records`` holds the current phase only (teardown, here): check every phase.
    assert_key_not_in(caplog.get_records("setup"))
    assert_key_not_in(caplog.get_records("call"))
    assert_key_not_in(caplog.records)
