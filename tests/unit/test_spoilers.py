"""Flagged results under ``spoiler``: Discord's SPOILER_ name, the web chat's blur."""

from __future__ import annotations

from reelbot.bots.web.page import render_page
from reelbot.bots.web.views import job_view
from reelbot.catalog import Task, load_catalog
from reelbot.jobs import GenerationRequest, JobStatus, ReplyAddress, Requester, resolve
from reelbot.store.records import JobRecord, ResultInfo


def _delivered(spoiler: bool) -> JobRecord:
    request = GenerationRequest(
        task=Task.IMAGINE,
        text="a fox",
        requester=Requester(platform="web", user_id="u1"),
        reply=ReplyAddress(platform="web", channel_id="c1"),
        source_id="s1",
    )
    params = resolve(Task.IMAGINE, "a fox", load_catalog("tiny"), default_seed=3)
    base = JobRecord(
        id="we0123", queue="q", request=request, params=params, created_at=0.0, updated_at=0.0
    )
    info = ResultInfo(
        ref="r", mime="image/png", ext="png", size=3, width=1, height=1, spoiler=spoiler
    )
    return base.moved(JobStatus.DELIVERED, result=info)


def test_a_spoilered_result_is_marked_for_the_page() -> None:
    assert job_view(_delivered(True))["media"]["spoiler"] is True
    assert job_view(_delivered(False))["media"]["spoiler"] is False
    page = render_page("tiny")
    # Blurred by CSS, revealed by a click on the element.
    assert ".spoiler { filter:blur(24px)" in page
    assert 'classList.remove("spoiler")' in page


def test_discord_names_a_spoilered_file_spoiler() -> None:
    from reelbot.bots.discord.render import filename_of

    for spoiler, name in ((True, "SPOILER_reelbot-we0123.png"), (False, "reelbot-we0123.png")):
        record = _delivered(spoiler).moved(JobStatus.DELIVERING)
        assert filename_of(record) == name
