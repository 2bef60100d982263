"""The error tree: stable codes, and messages fit to show."""

from __future__ import annotations

from reelbot.errors import (
    ERROR_CODES,
    Busy,
    ConfigError,
    InvalidOption,
    OutOfMemory,
    ReelbotError,
    TransientError,
    UserError,
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
