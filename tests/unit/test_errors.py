"""The error tree: stable codes, and messages fit to show."""

from __future__ import annotations

import re
from pathlib import Path

import reelbot
from reelbot.errors import (
    ERROR_CODES,
    Busy,
    Cancelled,
    ConfigError,
    ContentRefused,
    DeliveryFailed,
    InvalidOption,
    JobStalled,
    JobTimeout,
    OutOfMemory,
    OutputTooLarge,
    ReelbotError,
    ResultExpired,
    TransientError,
    Undeliverable,
    UserError,
    WorkerLost,
    error_from,
)


def _subclasses(cls: type[ReelbotError]) -> set[type[ReelbotError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_class_has_its_own_registered_code() -> None:
    classes = _subclasses(ReelbotError) | {ReelbotError}
    assert len({c.code for c in classes}) == len(classes)
    assert set(ERROR_CODES.values()) == classes


def test_user_errors_show_their_message_and_others_do_not_leak_details() -> None:
    assert InvalidOption("--steps 99 is out of range", option="steps").user_message == (
        "--steps 99 is out of range"
    )
    leaked = ReelbotError("KeyError: 'secret internals'")
    assert "secret" not in leaked.user_message
    assert "GPU ran out of memory" in OutOfMemory("CUDA OOM at 0x7f").user_message
    assert ConfigError("REELBOT_X: bad").user_message == "REELBOT_X: bad"


def test_details_are_attributes() -> None:
    assert Busy("busy", retry_after=30).retry_after == 30
    assert TransientError(retry_after=2.5).retry_after == 2.5
    assert isinstance(OutOfMemory(), TransientError)
    assert not isinstance(Busy("x"), TransientError) and isinstance(Busy("x"), UserError)


def test_codes_round_trip_through_the_registry() -> None:
    for code, cls in ERROR_CODES.items():
        assert cls.code == code
        rebuilt = error_from(code, "Shown as stored.")
        assert type(rebuilt) is cls and rebuilt.code == code
        assert rebuilt.message == rebuilt.user_message == "Shown as stored."
        assert isinstance(rebuilt, ReelbotError)
    # Not stored: details stay unset rather than missing.
    assert error_from(Busy.code, "b").retry_after is None  # type: ignore[attr-defined]
    assert error_from(InvalidOption.code, "o").option == ""  # type: ignore[attr-defined]


def test_an_unknown_or_missing_code_rebuilds_a_plain_error_with_its_message() -> None:
    unknown = error_from("from_a_newer_build", "Out of time.")
    assert type(unknown) is ReelbotError and unknown.user_message == "Out of time."
    assert error_from(None, None).user_message == ReelbotError.default_message
    assert error_from(Cancelled.code, None).user_message == Cancelled.default_message


def test_stored_code_strings_do_not_change() -> None:
    # They are in Redis records and metrics labels already.
    stored = {
        Cancelled: "cancelled",
        JobTimeout: "timeout",
        OutputTooLarge: "too_large",
        WorkerLost: "worker_lost",
        JobStalled: "stalled",
        Undeliverable: "undeliverable",
        ResultExpired: "result_expired",
        ContentRefused: "refused",
        ReelbotError: "internal",
    }
    assert {cls: cls.code for cls in stored} == stored
    assert issubclass(Undeliverable, DeliveryFailed) and issubclass(ResultExpired, DeliveryFailed)
    assert issubclass(JobStalled, TransientError) and issubclass(WorkerLost, TransientError)


def test_errors_built_from_details_say_them() -> None:
    assert "600s" in JobStalled(stall_s=600).user_message
    assert "12s limit" in JobTimeout(limit_s=12.4).user_message
    assert JobTimeout().user_message == JobTimeout.default_message
    assert "25 MB upload limit" in OutputTooLarge(limit_bytes=25_000_000).user_message
    assert OutputTooLarge(limit_bytes=8_000_000).limit_bytes == 8_000_000


_CODE_LITERAL = re.compile(
    r"""error_code\s*=\s*["']|\.labels\([^)]*["'](?P<code>[a-z_]+)["']\s*\)|_fail\(\s*\w+,\s*["']"""
)


def test_no_code_literal_outside_errors_py() -> None:
    """Every code on the wire is a class's ``code``: nothing else spells one out."""
    src = Path(reelbot.__file__).parent
    codes = set(ERROR_CODES)
    found = []
    for path in sorted(src.rglob("*.py")):
        if path.name == "errors.py" and path.parent == src:
            continue
        text = path.read_text()
        for match in _CODE_LITERAL.finditer(text):
            if match.group("code") is None or match.group("code") in codes:
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(src)}:{line}: {match.group(0)}")
    assert not found, "\n".join(found)
