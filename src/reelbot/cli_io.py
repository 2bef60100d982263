"""What every ``reelbot`` command line says when it stops on a usage error, and how it reads a
file it was given: one line on stderr, exit status 2."""

from __future__ import annotations

import sys
from pathlib import Path

from reelbot.errors import InvalidOption

__all__ = ["USAGE_ERROR", "fail", "read_file"]

USAGE_ERROR = 2


def fail(message: str) -> int:
    """Say ``message`` in one line and give the usage error's exit status."""
    print(f"reelbot: {message}", file=sys.stderr)
    return USAGE_ERROR


def read_file(path: Path, flag: str) -> bytes:
    """The bytes of the file given to ``flag``; a missing or unreadable one is a usage error."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidOption(f"{flag} {path}: {exc.strerror or exc}", option=flag) from None
