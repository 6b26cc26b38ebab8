"""``resonate_async.configure_logging``: console or JSON lines, levels, the stdlib bridge.

(Here with the CLI tests, which configure logging the same way.)
"""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from resonate_async import configure_logging


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_event_and_the_bound_ids() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = structlog.get_logger("resonate_async.core").bind(promise_id="order-1", task_id="t-1")
    log.info("execution_started", attempt=2)
    [line] = lines(out)
    event = json.loads(line)
    assert event["event"] == "execution_started"
    assert (event["promise_id"], event["task_id"], event["attempt"]) == ("order-1", "t-1", 2)
    assert event["level"] == "info"
    assert event["logger"] == "resonate_async.core"
    assert event["timestamp"].endswith("Z")


def test_events_below_the_level_are_dropped() -> None:
    out = io.StringIO()
    configure_logging("warning", json=True, stream=out)
    log = structlog.get_logger("app")
    log.info("quiet")
    log.debug("quieter")
    log.warning("loud")
    logging.getLogger("lib").info("quiet too")
    assert [json.loads(line)["event"] for line in lines(out)] == ["loud"]


def test_stdlib_records_go_through_the_same_renderer() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    logging.getLogger("some.lib").warning("disk %s", "full", extra={"device": "sda"})
    event = json.loads(lines(out)[0])
    assert (event["event"], event["logger"], event["device"]) == ("disk full", "some.lib", "sda")


def test_exceptions_are_rendered_in_json() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        raise RuntimeError("bad")
    except RuntimeError:
        structlog.get_logger("app").exception("step_crashed")
    event = json.loads(lines(out)[0])
    assert event["level"] == "error"
    assert "RuntimeError: bad" in event["exception"]


def test_console_lines_by_default_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG")
    structlog.get_logger("resonate_async.x").debug("task_suspended", promise_id="p-9")
    err = capsys.readouterr().err
    assert "task_suspended" in err and "promise_id=p-9" in err and "debug" in err


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    structlog.get_logger("app").info("once")
    assert (lines(first), len(lines(second))) == ([], 1)


def test_http_client_noise_is_held_back_unless_asked_for() -> None:
    for level in ("INFO", "DEBUG"):
        out = io.StringIO()
        configure_logging(level, json=True, stream=out)
        logging.getLogger("httpx").info("HTTP Request: POST / 200 OK")
        logging.getLogger("httpx").warning("retrying")
        assert [json.loads(line)["event"] for line in lines(out)] == ["retrying"], level
        assert logging.getLogger("httpx").level == logging.NOTSET  # its logger is left alone


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud': use one of DEBUG"):
        configure_logging("loud")
