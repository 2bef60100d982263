"""Log lines: JSON or text, the job id from the context, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from reelbot import logs
from reelbot.config import Settings

TOKEN = "123456:AAsecretTelegramToken_xyz"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger set up as ``reelbot`` sets it, writing to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    settings = Settings(
        telegram_token=SecretStr(TOKEN),
        web_token=SecretStr("web-token-abcdef"),
        redis_url="redis://:redis-pass-123@localhost:6379/0",
        log_format="json",
    )
    logs.setup(settings)
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _lines(buffer: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_the_job_id_of_their_context(captured: io.StringIO) -> None:
    log = logging.getLogger("reelbot.test")
    log.info("before")
    with logs.job_context("di0123abcd"):
        log.warning("stored %d bytes", 42)
    log.info("after")
    before, during, after = _lines(captured)
    assert "job_id" not in before and "job_id" not in after
    assert during["job_id"] == "di0123abcd" and during["msg"] == "stored 42 bytes"
    assert during["level"] == "WARNING" and during["logger"] == "reelbot.test"


def test_secrets_are_masked_in_messages_arguments_and_tracebacks(captured: io.StringIO) -> None:
    log = logging.getLogger("httpx")
    log.warning("POST https://api.telegram.org/bot%s/getMe", TOKEN)
    log.warning("password redis-pass-123 and web-token-abcdef")
    try:
        raise RuntimeError(f"bad url /bot{TOKEN}/sendPhoto")
    except RuntimeError:
        logging.getLogger("reelbot.test").exception("post failed")
    text = captured.getvalue()
    for secret in (TOKEN, "redis-pass-123", "web-token-abcdef"):
        assert secret not in text
    first, second, third = _lines(captured)
    assert first["msg"] == "POST https://api.telegram.org/bot[redacted]/getMe"
    assert second["msg"] == "password [redacted] and [redacted]"
    assert "RuntimeError: bad url /bot[redacted]/sendPhoto" in third["exc"]


def test_text_format_names_the_job() -> None:
    formatter = logs._TextFormatter(logs.TEXT_FORMAT)
    record = logging.LogRecord("reelbot.x", logging.INFO, __file__, 1, "done", None, None)
    record.job_id = "te42"
    assert formatter.format(record).endswith("INFO reelbot.x [job te42]: done")
