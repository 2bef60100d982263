"""Logging for the long-running processes: text or JSON lines, the job id, no secrets.

The job id rides in a context variable: ``job_context(job_id)`` around a job's work puts it on
every line logged from that task. The redaction filter is defence in depth: secrets are
``SecretStr`` and never formatted on purpose, but a library may log a URL with a token in it
(the Telegram Bot API puts the token in every request path).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from reelbot.config import Settings

__all__ = ["JsonFormatter", "RedactFilter", "job_context", "secrets_of", "setup"]

JOB_ID: ContextVar[str | None] = ContextVar("reelbot_job_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "[redacted]"
# Shorter values would mask ordinary words; no real token is this short.
MIN_SECRET_LEN = 6


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every log line in this context (this asyncio task) with ``job_id``."""
    token = JOB_ID.set(job_id)
    try:
        yield
    finally:
        JOB_ID.reset(token)


class JobIdFilter(logging.Filter):
    """Adds ``record.job_id`` from the context, unless the call passed one in ``extra``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        if getattr(record, "job_id", None) is None:
            record.job_id = JOB_ID.get()
        return True


class RedactFilter(logging.Filter):
    """Replaces every configured secret in a record's message and traceback with a mask."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LEN}, key=len)[::-1]

    def redact(self, text: str) -> str:
        """``text`` with each secret masked."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record, with its message and traceback redacted."""
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # The formatter uses exc_text when set, so the traceback is redacted once, here.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, job_id (when known), exc."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    """The plain format, with ``[job ID]`` after the logger name on lines about a job."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a text line."""
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        if job_id is None:
            return line
        head, sep, tail = line.partition(": ")
        return f"{head} [job {job_id}]{sep}{tail}"


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in the settings, and the password of the Redis URL."""
    values = [
        s.get_secret_value()
        for s in (
            settings.discord_token,
            settings.telegram_token,
            settings.telegram_webhook_secret,
            settings.web_token,
        )
        if s is not None
    ]
    if settings.redis_url:
        with contextlib.suppress(ValueError):
            password = urlsplit(settings.redis_url).password
            if password:
                values.append(password)
    return values


def setup(settings: Settings) -> None:
    """Configure the root logger once for this process, per ``log_format`` and ``log_level``."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if settings.log_format == "json" else _TextFormatter(TEXT_FORMAT)
    )
    handler.addFilter(JobIdFilter())
    handler.addFilter(RedactFilter(secrets_of(settings)))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    if root.level > logging.DEBUG:
        # httpx logs every request line at INFO (a poll every few seconds): noise.
        logging.getLogger("httpx").setLevel(logging.WARNING)
