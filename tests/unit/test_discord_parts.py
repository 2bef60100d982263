"""The Discord adapter's pure parts: text within Discord's limits, the edit throttle, the error
replies, button ids, the token clock and the interaction payload as discord.py reads it."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from reelbot.bots.discord import render
from reelbot.bots.discord.bot import error_text, requester_of
from reelbot.bots.discord.buttons import JobButton, view_of
from reelbot.bots.discord.surface import TOKEN_LIFETIME_S, DiscordSurface, size_limit
from reelbot.catalog import Task, load_catalog
from reelbot.chat.surface import result_buttons, status_buttons
from reelbot.chat.texts import Status, models_lines, progress_bar
from reelbot.chat.throttle import EditThrottle
from reelbot.errors import Busy, InvalidOption, OutOfMemory, QuotaExceeded
from reelbot.jobs import (
    GenerationRequest,
    JobStatus,
    Options,
    ReplyAddress,
    Requester,
    job_id_for,
    resolve,
    seed_for,
)
from reelbot.store.records import JobRecord, ResultInfo

# A copy of a payload discord.py 2.7.1 accepted from a local server: the project's tests carry
# their own copy rather than depending on the shared reference folder.
SLASH: dict[str, Any] = {
    "id": "1575582288073195526",
    "application_id": "1575582288073195521",
    "type": 2,
    "token": "aW50ZXJhY3Rpb246Ww9m5VzPyWMfWA29_qFmtDgvbxj03XxCdXdaqOzdhG-qudtCnZofJMFfVp_MuUtZ",
    "version": 1,
    "guild_id": "1575582288073195523",
    "guild": {"id": "1575582288073195523", "locale": "en-US", "features": []},
    "channel_id": "1575582288073195524",
    "channel": {
        "id": "1575582288073195524",
        "type": 0,
        "guild_id": "1575582288073195523",
        "name": "general",
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": None,
        "topic": None,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
        "permissions": "265280",
    },
    "member": {
        "user": {
            "id": "111111111111111111",
            "username": "alice",
            "discriminator": "0",
            "global_name": "Alice",
            "avatar": None,
        },
        "roles": [],
        "permissions": "265280",
        "joined_at": "2024-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "nick": None,
        "avatar": None,
        "premium_since": None,
        "pending": False,
    },
    "app_permissions": "1125899906842623",
    "locale": "en-US",
    "guild_locale": "en-US",
    "entitlements": [],
    "authorizing_integration_owners": {"0": "1575582288073195523"},
    "context": 0,
    "attachment_size_limit": 10485760,
    "data": {
        "id": "1575582288073195527",
        "name": "imagine",
        "type": 1,
        "options": [
            {"name": "prompt", "type": 3, "value": "a red fox"},
            {"name": "image", "type": 11, "value": "1575582288073195525"},
        ],
        "resolved": {
            "attachments": {
                "1575582288073195525": {
                    "id": "1575582288073195525",
                    "filename": "init.png",
                    "size": 11,
                    "url": "http://127.0.0.1:8000/cdn/1575582288073195525_init.png",
                    "proxy_url": "http://127.0.0.1:8000/cdn/1575582288073195525_init.png",
                    "content_type": "image/png",
                    "ephemeral": True,
                    "width": 512,
                    "height": 512,
                }
            }
        },
    },
}


def _request(text: str = "a fox") -> GenerationRequest:
    return GenerationRequest(
        task=Task.IMAGINE,
        text=text,
        requester=Requester(platform="discord", user_id="42"),
        reply=ReplyAddress(platform="discord", channel_id="1"),
        source_id="99",
    )


def _record(task: Task = Task.IMAGINE, **fields: Any) -> JobRecord:
    params = resolve(task, "a fox", load_catalog("tiny"), default_seed=3)
    return JobRecord(
        id="di0123",
        queue="q",
        request=_request(),
        params=params,
        created_at=0.0,
        updated_at=0.0,
        **fields,
    )


def test_progress_bar() -> None:
    assert progress_bar(0, 8, width=8) == "▱" * 8 + " 0/8"
    assert progress_bar(4, 8, width=8) == "▰" * 4 + "▱" * 4 + " 4/8"
    assert progress_bar(9, 8, width=8) == "▰" * 8 + " 8/8"


def test_texts_fit_discords_2000_characters() -> None:
    catalog = load_catalog("tiny")
    long_prompt = "fox " * 370  # 1480 characters: within the prompt limit
    params = resolve(Task.IMAGINE, long_prompt + " --no " + "x" * 800, catalog, default_seed=1)
    caption = render.result_text(_request(long_prompt), params, mention=True, note="n" * 500)
    assert len(caption) <= 2000
    assert caption.startswith("<@42> **/imagine**") and "--seed 1" in caption
    status = render.status_text(Status(JobStatus.QUEUED, "p" * 5000, position=3, eta_s=75))
    assert len(status) <= 2000 and "position 3" in status and "about 1 min" in status
    assert status.startswith("⏳ **Queued**")
    running = render.status_text(Status(JobStatus.RUNNING, "p", step=3, total=6))
    assert "3/6" in running and "**Running**" in running
    # A running job asked to stop is not called cancelled before the worker says so.
    stopping = render.status_text(Status(JobStatus.RUNNING, "p", step=3, total=6, stopping=True))
    assert "Cancelling" in stopping and "Cancelled" not in stopping
    assert len(render.failure_text(_request(), "m" * 5000, mention=True)) <= 2000
    models = "\n".join(models_lines(catalog))
    assert "tiny-zimage (default)" in models and "Styles (--style)" in models


async def test_throttle_keeps_one_edit_per_interval_and_the_latest_state() -> None:
    now = [100.0]
    throttle = EditThrottle(interval=3.0, clock=lambda: now[0])
    shown: list[int] = []

    def edit(n: int) -> Any:
        async def action() -> None:
            shown.append(n)

        return action

    await throttle.run("m", edit(1))
    for n in range(2, 6):
        await throttle.run("m", edit(n))
    assert shown == [1]  # the rest wait for the interval
    await throttle.run("other", edit(100))  # another message is not held back
    assert shown == [1, 100]
    now[0] += 3.0
    await asyncio.sleep(0.01)  # the delayed flush was scheduled with the time left (3 s)
    await throttle.aclose()
    assert shown == [1, 100]  # closing drops what has not run

    throttle = EditThrottle(interval=0.05)
    shown.clear()
    await throttle.run("m", edit(1))
    for n in range(2, 6):
        await throttle.run("m", edit(n))
    await asyncio.sleep(0.15)
    assert shown == [1, 5]  # the intermediate states were dropped, the latest shown
    await throttle.aclose()
    # A progress event that arrives while the adapter stops schedules nothing that would
    # outlive the event loop.
    await throttle.run("late", edit(7))
    await throttle.run("late", edit(8))
    assert shown == [1, 5] and not throttle._tasks


def test_error_replies_by_class() -> None:
    from discord import app_commands
    from redis.exceptions import ConnectionError as RedisConnectionError

    assert error_text(InvalidOption("--steps 99 is out of range", option="steps")).startswith(
        "--steps 99"
    )
    assert "Try again in 30 s" in error_text(Busy("Busy.", retry_after=30))
    assert "Try again in 2 min" in error_text(QuotaExceeded("Spent.", retry_after=120))
    assert "ran out of memory" in error_text(OutOfMemory())
    unknown = error_text(KeyError("boom"))
    assert unknown.startswith("Something went wrong (ref ") and "boom" not in unknown
    # Redis failing anywhere reads as chat's words, not as a bug.
    assert "temporarily unavailable" in error_text(RedisConnectionError("refused"))
    assert error_text(app_commands.CheckFailure("no")).startswith("That option is not valid")


def test_button_ids_are_short_and_parse_back() -> None:
    job = job_id_for("discord", "1" * 20)
    image = _record().model_copy(update={"id": job})
    views = [view_of(result_buttons(image)), view_of(status_buttons(job, JobStatus.RUNNING))]
    ids = [item.custom_id for view in views if view for item in view.children]  # type: ignore[attr-defined]
    shorts = ["up", "vs", "vx", "rr", "ani", "zo", "zh", "pl", "pr", "pu", "pd", "in", "cx"]
    assert ids == [f"rb:{short}:{job}" for short in shorts]
    assert all(len(i) <= 100 for i in ids)
    video = view_of(result_buttons(_record(Task.VIDEO).model_copy(update={"id": job})))
    assert video is not None
    assert [getattr(i, "custom_id", "") for i in video.children] == [
        f"rb:{short}:{job}" for short in ("rr", "ex", "sm", "up", "in")
    ]
    assert view_of(status_buttons(job, JobStatus.DELIVERED)) is None
    # A click is parsed back from its custom_id alone (buttons outlive restarts).
    template = JobButton.__discord_ui_compiled_template__
    assert template.fullmatch(f"rb:xx:{job}") is None
    clicked = views[0].children[0] if views[0] else None
    # "var" is the Variations button of results posted before Vary (subtle)/(strong).
    for short, action in (("rr", "reroll"), ("cx", "cancel"), ("var", "vary"), ("in", "info")):
        match = template.fullmatch(f"rb:{short}:{job}")
        assert match is not None
        rebuilt = asyncio.run(JobButton.from_custom_id(cast(Any, None), cast(Any, clicked), match))
        assert (rebuilt.button.action, rebuilt.button.job_id) == (action, job)


def test_token_clock_and_size_limit() -> None:
    created = 1_000_000.0
    reply = ReplyAddress(
        platform="discord",
        channel_id="1",
        interaction_token="t",
        interaction_expires_at=created + TOKEN_LIFETIME_S,
        extra={"max_bytes": "26214400"},
    )
    now = [created]
    poster = DiscordSurface(client=None, clock=lambda: now[0])  # type: ignore[arg-type]
    assert poster.token_alive(reply)
    now[0] = created + 14 * 60 + 30  # inside the last minute: too close to use
    assert not poster.token_alive(reply)
    assert not poster.token_alive(reply.model_copy(update={"interaction_token": None}))
    assert size_limit(reply) == 25 * 1024 * 1024
    assert size_limit(ReplyAddress(platform="discord", channel_id="1")) == 10 * 1024 * 1024


def test_seed_matches_the_queues_default() -> None:
    from reelbot.chat.service import ChatService

    job = job_id_for("discord", "1234")
    # The queue derives the default seed from the last 8 hex digits of the job id, and so does
    # the check a Discord command makes before its acknowledgement.
    assert seed_for(job) == int(job[-8:], 16)
    service = ChatService.__new__(ChatService)
    service.catalog, service.platform = load_catalog("tiny"), "discord"
    planned = service.plan(Task.IMAGINE, "a fox", Options(), source_id="1234", has_image=False)
    assert planned.seed == seed_for(job)


def _interaction(permissions: str) -> Any:
    import discord

    payload = json.loads(json.dumps(SLASH))
    payload["member"]["permissions"] = permissions
    client = discord.Client(intents=discord.Intents.none())
    bot = {"id": payload["application_id"], "username": "bot", "discriminator": "0", "avatar": None}
    client._connection.user = discord.ClientUser(state=client._connection, data=bot)  # type: ignore[arg-type]
    return discord.Interaction(data=payload, state=client._connection)


def test_requester_from_a_recorded_payload() -> None:
    member = requester_of(_interaction("265280"), owner_ids=())
    assert (member.user_id, member.server_id, member.is_admin) == (
        "111111111111111111",
        "1575582288073195523",
        False,
    )
    admin = requester_of(_interaction(str(265280 | 1 << 5)), owner_ids=())
    assert admin.is_admin
    owner = requester_of(_interaction("0"), owner_ids=("discord:111111111111111111",))
    assert owner.is_admin


def test_a_finished_record_names_its_file_and_failure() -> None:
    info = ResultInfo(ref="redis:di0123", mime="image/png", ext="png", size=3, width=1, height=1)
    done = _record().moved(JobStatus.DELIVERING, result=info)
    assert render.filename_of(done) == "reelbot-di0123.png"
    spoiler = info.model_copy(update={"spoiler": True})
    assert render.filename_of(done.model_copy(update={"result": spoiler})).startswith("SPOILER_")
    failed = _record().moved(JobStatus.FAILED, error_code="x", error_message="Out of time.")
    text = render.failure_text(failed.request, failed.error_message, mention=True)
    assert text == "<@42> **/imagine** ⚠️ Failed: Out of time."
