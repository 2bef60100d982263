"""Hypothesis drives the real Discord adapter through the emulator with forged interactions.

Discord checks option types and ranges in its client, but an interaction payload can be forged
(and Discord's own checks change): any option may arrive with any type and any value, a
required one may be missing, a button's custom_id may name anything. Whatever arrives, the
adapter acknowledges within Discord's 3 s, answers in words (a private refusal, or a status
message that ends in a state), pings nobody, and keeps serving.

The stack (Valkey, a worker, the emulators, the adapters) runs on its own event loop in a
thread (``Background``), so that hypothesis, which is synchronous, can drive it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reelbot.catalog import Catalog
from reelbot.jobs import job_id_for
from reliability.background import Background
from reliability.hostile import HOSTILE_TEXT, assert_no_pings
from reliability.stacks import DiscordEmulator, Interaction, Platforms, both_platforms

from .conftest import SOAK

EXAMPLES = 300 if SOAK else int(os.environ.get("REELBOT_FUZZ_EXAMPLES", "40"))
ACK_S = 3.0
ANSWER_S = 60.0

Stack = tuple[Background[Platforms], Platforms]

pytestmark = pytest.mark.timeout(120 + EXAMPLES * 6)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_catalog: Catalog,
    tiny_data_dir: Path,
    runner: Any,
) -> Iterator[Stack]:
    runner.preload("tiny-zimage")
    tmp = tmp_path_factory.mktemp("fuzz-discord")
    background = Background(both_platforms(tmp, tiny_catalog, tiny_data_dir, runner, workers=1))
    with background as up:
        yield background, up


# What a forged payload may carry: every JSON type Discord could send, at hostile sizes.
TEXT = st.one_of(
    HOSTILE_TEXT,
    st.sampled_from(
        ["16:9", "1:0", "99999:1", "tiny-zimage", "tiny-wan", "../../etc/passwd", "a fox " * 2000]
    ),
)
VALUE = st.one_of(
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
OPTION_NAMES = [
    "negative",
    "seed",
    "aspect",
    "steps",
    "guidance",
    "model",
    "duration",
    "fps",
    "strength",
    "job",
    "bogus",
]
COMMANDS = ["imagine", "video", "cancel", "jobs", "quota", "models", "help"]
users = itertools.count(600000000000000000)
RESULTS: list[tuple[dict[str, Any], str]] = []
"""The result message the clicks go to, and its job, made on first use."""


def _content(emu: DiscordEmulator, inter: Interaction) -> str:
    return str((emu.original(inter) or {}).get("content") or "")


def _answered(emu: DiscordEmulator, inter: Interaction) -> bool:
    """The user has words to read: the response itself, or the deferred message edited, or a
    followup."""
    if inter.response_type is None:
        return False
    if _content(emu, inter).strip() or (emu.original(inter) or {}).get("embeds"):
        return True
    return any(m["content"] or m["attachments"] or m.get("embeds") for m in emu.followups(inter))


def _check(
    background: Background[Platforms], emu: DiscordEmulator, inter: Interaction, start: int
) -> None:
    async def answered() -> None:
        await emu.wait_for(lambda: inter.response_type is not None, within=ACK_S + 2)
        await emu.wait_for(lambda: _answered(emu, inter), within=ANSWER_S)

    background.run(answered())
    assert inter.responded_at is not None
    assert inter.responded_at - inter.created_at < ACK_S
    if inter.response_type == 4:
        assert inter.ephemeral or _content(emu, inter).strip()
    assert emu.violations == []
    assert_no_pings(emu.calls[start:])


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    command=st.sampled_from(COMMANDS),
    prompt=st.none() | TEXT | st.integers(min_value=-(2**70), max_value=2**70),
    options=st.dictionaries(st.sampled_from(OPTION_NAMES), VALUE, max_size=4),
)
# Found here: the refusal quoted the whole 12 000-character name, over Discord's 2000.
@example(command="imagine", prompt="f", options={"model": "a fox " * 2000})
def test_forged_slash_commands_are_answered(
    stack: Stack, command: str, prompt: Any, options: dict[str, Any]
) -> None:
    background, up = stack
    emu = up.discord
    sent = dict(options)
    if prompt is not None:
        sent["prompt"] = prompt
    start = len(emu.calls)
    inter = background.run(emu.slash(command, sent, user_id=str(next(users))))
    _check(background, emu, inter, start)


@settings(
    max_examples=max(10, EXAMPLES // 2),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    action=st.sampled_from(["rr", "var", "ani", "cx", "zz", ""]),
    target=st.none() | st.text(max_size=120) | st.from_regex(r"\A[a-z]{2}[0-9a-f]{16}\Z"),
    owner=st.booleans(),
)
def test_forged_button_clicks_are_answered(
    stack: Stack, action: str, target: str | None, owner: bool
) -> None:
    """A click on a real result message, by its owner or anyone, with a custom_id naming its
    job (None), another job or nothing known."""
    background, up = stack
    emu = up.discord
    requester = "610000000000000000"

    async def a_result() -> tuple[dict[str, Any], str]:
        if not RESULTS:
            ask = {"prompt": "a result to click on"}
            inter = await emu.slash("imagine", ask, user_id=requester)
            found: list[dict[str, Any]] = await emu.wait_for(
                lambda: [m for m in emu.followups(inter) if m["attachments"]], within=ANSWER_S
            )
            RESULTS.append((found[0], job_id_for("discord", inter.id)))
        return RESULTS[0]

    message, job_id = background.run(a_result())
    clicker = requester if owner else str(next(users))
    start = len(emu.calls)
    custom_id = f"rb:{action}:{job_id if target is None else target}"[:100]
    inter = background.run(emu.click(message["id"], custom_id, user_id=clicker))
    _check(background, emu, inter, start)
