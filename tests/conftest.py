"""Suite-wide checks: every test runs with DEBUG logging captured, and no record,
anywhere, may contain the API key the tests use."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

#: The API key every test server accepts; distinctive so a leak is unmistakable.
SECRET_KEY = "sk-test-9f8e7d6c5b4a-never-log-me"


@pytest.fixture(autouse=True)
def _api_key_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET_KEY not in text, f"API key leaked in a log record: {record.name}"
        if record.exc_text:
            assert SECRET_KEY not in record.exc_text
