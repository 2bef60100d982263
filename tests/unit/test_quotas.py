"""Quota words and arithmetic without Redis: scopes, values, windows, messages."""

from __future__ import annotations

import math

import pytest

from reelbot.config import Settings
from reelbot.errors import InvalidOption
from reelbot.governance.admin import parse_assignments, scope_of
from reelbot.governance.quotas import (
    Limits,
    QuotaBook,
    QuotaStatus,
    parse_scope,
    parse_value,
    window,
)
from reelbot.jobs import Requester

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


@pytest.mark.parametrize(
    "scope",
    ["default", "discord", "telegram:server:-100123", "discord:role:42", "web:user:abc"],
)
def test_scopes_accepted(scope: str) -> None:
    assert parse_scope(scope.upper() if scope == "default" else scope) == scope


@pytest.mark.parametrize("scope", ["", "discord:guild:1", "discord:role:abc", "a:b", "x y"])
def test_scopes_refused_with_the_forms(scope: str) -> None:
    with pytest.raises(InvalidOption, match="PLATFORM:server:ID"):
        parse_scope(scope)


def test_values() -> None:
    assert parse_value("daily", "12.5") == 12.5
    assert parse_value("daily", "none") == math.inf
    assert parse_value("cooldown", "none") == 0.0
    assert parse_value("cooldown", "30s") == 30.0
    assert parse_value("queue", "inherit") is None
    for key, bad in (("daily", "-1"), ("concurrent", "2.5"), ("queue", "lots"), ("speed", "1")):
        with pytest.raises(InvalidOption):
            parse_value(key, bad)


def test_window_resets_at_the_hour() -> None:
    number, end = window(T0, 0)
    assert end - T0 == 16 * 3600
    assert window(end - 1, 0)[0] == number and window(end, 0)[0] == number + 1
    assert window(T0, 9)[1] - T0 == 3600


def test_chat_scopes() -> None:
    member = Requester(platform="discord", user_id="1", server_id="9")
    assert scope_of("server", member) == "discord:server:9"
    assert scope_of("<@&55>", member) == "discord:role:55"
    assert scope_of("<@!77>", member) == "discord:user:77"
    assert scope_of("user:5", member) == "discord:user:5"
    with pytest.raises(InvalidOption, match="the server you type in"):
        scope_of("server", member.model_copy(update={"server_id": None}))
    assert parse_assignments(["daily=5", "cooldown=inherit"]) == {"daily": 5.0, "cooldown": None}
    with pytest.raises(InvalidOption, match="KEY=VALUE"):
        parse_assignments(["daily"])


def test_refusals_say_what_is_left_and_when() -> None:
    book = QuotaBook(None, Settings(quota_reset_hour=6))  # type: ignore[arg-type]
    limits = Limits(daily=10, pool=math.inf, concurrent=2, cooldown=30, queue=5)
    daily = book.refusal("daily", 9.5, limits, cost=1.0, now=T0)
    assert daily.user_message == (
        "Not enough credits: you have 0.5 of 10 left today and this job costs 1. "
        "Credits reset at 06:00 UTC (in 22 h 0 min)."
    )
    assert daily.retry_after == 22 * 3600
    cooldown = book.refusal("cooldown", 12.2, limits, cost=1.0, now=T0)
    assert "wait 13 s" in cooldown.user_message and cooldown.retry_after == 12.2
    assert (
        "2 jobs queued or running" in book.refusal("concurrent", 2, limits, cost=1, now=T0).message
    )


def test_status_text() -> None:
    limits = Limits(daily=10, pool=100, concurrent=3, cooldown=0, queue=5)
    text = QuotaStatus(limits, used=4, pool_used=99, in_flight=1, reset_at=T0 + 3600).text(T0)
    assert "Credits left today: 1 of 10 (used 4)." in text
    assert "pool: 1 of 100 left" in text and "Jobs in flight: 1 of 3." in text
    assert "Resets at 09:00 UTC (in 1 h 0 min)." in text
