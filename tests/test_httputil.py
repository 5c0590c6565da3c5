"""Retry-After, read one way for every client."""

from datetime import UTC, datetime

import pytest

from monitor.httputil import retry_after_seconds

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value,expected", [
    ("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("-3", 0.0),
    ("Thu, 26 Nov 2026 12:00:30 GMT", 30.0), ("Thu, 26 Nov 2026 11:59:00 GMT", 0.0),
    (None, None), ("", None), ("soon", None),
])
def test_seconds_or_an_http_date(value, expected):
    assert retry_after_seconds(value, NOW) == expected
