"""``redact``: the one function that takes credentials out of printed URLs and text."""

from __future__ import annotations

import pytest

from resonate_async._redact import redact


@pytest.mark.parametrize(("text", "shown"), [
    ("http://user:pw@host:8001/x", "http://***@host:8001/x"),
    ("https://only-a-token@host", "https://***@host"),
    ("http://u:p@ss@host/p", "http://***@host/p"),  # an unescaped "@" in the password
    ("postgresql://app:hunter2@db/prod", "postgresql://***@db/prod"),
    ("http://host/x?token=abc&group=g", "http://host/x?token=***&group=g"),
    ("http://host/x?group=g&access_token=abc", "http://host/x?group=g&access_token=***"),
    ("http://host/x?api_key=1&password=2", "http://host/x?api_key=***&password=***"),
    ("poll_failed url=http://a:b@h1/poll/g/p reason=ConnectError: http://c:d@h2",
     "poll_failed url=http://***@h1/poll/g/p reason=ConnectError: http://***@h2"),
])
def test_credentials_are_masked(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize("text", [
    "http://host:8001/poll/g/p?work=0",
    "poll://any@payments/worker-1",  # a delivery mode, not a user
    "poll://uni@payments/worker-1",
    "http://host/path/with@sign",  # an "@" after the authority is not user info
    "mail alice@example.com",
    "no urls here, a=b",
    "",
])
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert redact(text) == text
