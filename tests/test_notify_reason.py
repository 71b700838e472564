"""A notification that is not delivered says why, in one line, without the URL's token."""

from __future__ import annotations

import logging

import pytest

from fedweave.plugins import load_config
from fedweave.records.notify import Notifier, failure_reason, redact

TOKEN = "123456789:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghi"


def test_an_undelivered_message_logs_the_reason_in_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("apprise")
    notifier = Notifier(load_config(None), ["json://127.0.0.1:9/nobody"])  # nothing listens
    with caplog.at_level(logging.WARNING, logger="fedweave"):
        assert notifier.send("title", "body") is False
    (line,) = [r.getMessage() for r in caplog.records if r.name == "fedweave"]
    assert line.startswith("notify: a message to json:// was not delivered (")
    assert "connection error" in line.lower() and "127.0.0.1" in line and "\n" not in line


def test_reasons_are_redacted_and_joined() -> None:
    text = (f"Failed to send to https://api.telegram.org/bot{TOKEN}/sendMessage: 401\n"
            f"token {TOKEN} rejected\nFailed to send to https://x.invalid/a: 401\n")
    reason = failure_reason(text)
    assert TOKEN not in reason and "api.telegram.org" not in reason
    assert reason == "Failed to send to <url> 401; token *** rejected"
    assert redact("a\n b") == "a b" and failure_reason("") == "no reason given by the service"
