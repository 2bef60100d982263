"""Content policy against a real Redis and the real worker with the real classifier.

The tiny models make abstract pictures that score near 0; a server threshold of 0 flags every
result, and 1 flags none, so each mode is exercised on real scores without explicit material.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from reelbot.catalog import Catalog, Task
from reelbot.config import Settings
from reelbot.errors import ContentRefused
from reelbot.governance import audit
from reelbot.governance.policy import apply
from reelbot.jobs import GenerationRequest, JobStatus, ReplyAddress, Requester, job_id_for
from reelbot.queue.submit import JobQueue
from reelbot.runtime.server import RedisServer
from reelbot.store.records import JobRecord

from .conftest import PLATFORM, Posted, StartWorkers, make_settings, wait_for_record
from .test_quotas_cli import reelbot

pytestmark = pytest.mark.timeout(120)
SERVER = "g1"
SCOPE = f"{PLATFORM}:server:{SERVER}"


def ask(task: str, text: str, source_id: str, *, nsfw_channel: bool = False) -> GenerationRequest:
    """A request from user u1 in server g1."""
    return GenerationRequest(
        task=Task(task),
        text=text,
        requester=Requester(platform=PLATFORM, user_id="u1", server_id=SERVER, display_name="u1"),
        reply=ReplyAddress(platform=PLATFORM, channel_id="c1", nsfw_channel=nsfw_channel),
        source_id=source_id,
    )


async def set_policy(queue: JobQueue, *words: str) -> None:
    """A server admin changes the server's policy."""
    await apply(queue.policy, SCOPE, list(words), actor="web:user:admin", origin=SCOPE)


async def used(queue: JobQueue) -> float:
    return (await queue.quotas.usage(f"{PLATFORM}:user:u1"))[f"{PLATFORM}:user:u1"]


async def test_blocked_prompts_leave_no_job_and_are_audited(
    server: RedisServer, data_dir: Path, redis: ArqRedis, catalog: Catalog
) -> None:
    settings = make_settings(server.url, data_dir, blocked_words=("zorp",))
    queue = JobQueue(redis, settings, catalog)
    with pytest.raises(ContentRefused) as refused:
        await queue.submit(ask("imagine", "a Z.0.R.P in the sky", "s1"))
    assert "zorp" not in refused.value.user_message.lower()
    # A server's own word, in a phrase, spelled around.
    await set_policy(queue, "block", "red", "panda")
    with pytest.raises(ContentRefused):
        await queue.submit(ask("video", "a R3D  PANDA dancing --duration 1", "s2"))
    assert await queue.records.get(job_id_for(PLATFORM, "s1")) is None
    assert await queue.records.get(job_id_for(PLATFORM, "s2")) is None
    assert await redis.zcard(settings.image_queue) == 0
    assert await redis.zcard(settings.video_queue) == 0
    assert await used(queue) == 0
    # Another server is not bound by g1's own word.
    other = ask("imagine", "a red panda", "s3").model_copy(
        update={"requester": Requester(platform=PLATFORM, user_id="u2", server_id="g2")}
    )
    assert (await queue.submit(other)).created
    log = await audit.entries(redis, origin=SCOPE)
    refusals = [e for e in log if e.action == "prompt refused"]
    assert [e.before for e in refusals] == ["a R3D PANDA dancing", "a Z.0.R.P in the sky"]
    assert "matched red panda" in refusals[0].after and "matched zorp" in refusals[1].after
    assert any(e.action == "policy block" for e in log)


async def test_a_catastrophic_server_pattern_is_answered_at_once(queue: JobQueue) -> None:
    # (a+)+$ backtracks exponentially in Python's re on a run of a's that does not end the
    # text; one admin's pattern must not stall the event loop that every server shares.
    await set_policy(queue, "pattern", "(a+)+$")
    who = ask("imagine", "x", "p0").requester
    answers = {}
    for prompt in ("a" * 40 + "!", "a" * 26 + "!b", "a" * 1400 + " b"):
        started = time.perf_counter()
        try:
            await queue.policy.check_prompt(who, prompt, job_id="p1")
            answers[prompt[-2:]] = "accepted"
        except ContentRefused:
            answers[prompt[-2:]] = "refused"
        took = time.perf_counter() - started
        assert took < 0.05, f"checking {len(prompt)} characters took {took:.2f} s"
    assert answers == {"a!": "refused", "!b": "accepted", " b": "accepted"}


async def _run(
    queue: JobQueue, start_workers: StartWorkers, request: GenerationRequest
) -> JobRecord:
    await start_workers()
    submitted = await queue.submit(request)
    return await wait_for_record(
        queue.records, submitted.record.id, lambda r: r.finished and r.posted_at is not None
    )


@pytest.mark.parametrize("task", ["imagine", "video"])
async def test_block_withholds_and_refunds(
    queue: JobQueue, start_workers: StartWorkers, consumer: Posted, task: str
) -> None:
    await set_policy(queue, "threshold", "0")
    done = await _run(queue, start_workers, ask(task, "a calm lake --steps 2", f"b-{task}"))
    assert (done.status, done.error_code) == (JobStatus.FAILED, "refused")
    assert done.result is None
    assert "withheld" in (done.error_message or "") and "credits were returned" in (
        done.error_message or ""
    )
    (posted,) = consumer.for_job(done.id)
    assert posted.data is None
    assert await used(queue) == 0
    # Admins see what was withheld, from whom, on which model and with what score.
    log = await audit.entries(queue.redis, scope=SCOPE)
    (entry,) = [e for e in log if e.action == "result withheld"]
    assert (entry.actor, entry.origin) == (f"{PLATFORM}:user:u1 (u1)", SCOPE)
    assert entry.before == "a calm lake"
    assert done.id in entry.after and f"on {done.params.model}" in entry.after, entry.after
    assert re.search(r"nsfw score (0|1)\.\d{3} ", entry.after), entry.after


@pytest.mark.parametrize("task", ["imagine", "video"])
async def test_spoiler_marks_the_result(
    queue: JobQueue, start_workers: StartWorkers, consumer: Posted, task: str
) -> None:
    await set_policy(queue, "mode", "spoiler")
    await set_policy(queue, "threshold", "0")
    done = await _run(queue, start_workers, ask(task, "a calm lake --steps 2", f"s-{task}"))
    assert done.status == JobStatus.DELIVERED
    assert done.result is not None and done.result.spoiler
    assert done.result.nsfw_score is not None and 0 <= done.result.nsfw_score <= 1
    (posted,) = consumer.for_job(done.id)
    assert posted.data
    assert await used(queue) > 0


async def test_nsfw_channels_and_unflagged_results_post_as_they_are(
    queue: JobQueue, start_workers: StartWorkers, consumer: Posted
) -> None:
    await set_policy(queue, "threshold", "0")
    # Flagged, but in a channel marked NSFW: the default nsfw-mode is allow.
    done = await _run(
        queue, start_workers, ask("imagine", "a lake --steps 2", "n1", nsfw_channel=True)
    )
    assert done.status == JobStatus.DELIVERED
    assert done.result is not None and not done.result.spoiler
    # Not flagged (the real score of an abstract picture is far under 0.99) under block.
    await set_policy(queue, "threshold", "0.99")
    calm = await queue.submit(ask("imagine", "a lake --steps 2 --seed 3", "n2"))
    kept = await wait_for_record(queue.records, calm.record.id, lambda r: r.posted_at is not None)
    assert kept.status == JobStatus.DELIVERED
    assert kept.result is not None and not kept.result.spoiler
    assert kept.result.nsfw_score is not None and kept.result.nsfw_score < 0.99


async def test_the_operator_command_line(
    settings: Settings, queue: JobQueue, redis: ArqRedis
) -> None:
    done = reelbot(settings, "policy", SCOPE, "block", "zorp")
    assert done.returncode == 0, done.stderr
    assert "words=1" in done.stdout
    shown = reelbot(settings, "policy", SCOPE)
    assert "in effect: mode=block nsfw-mode=allow threshold=0.8" in shown.stdout, shown.stdout
    with pytest.raises(ContentRefused):
        await queue.submit(ask("imagine", "zorp", "cli-1"))
    bad = reelbot(settings, "policy", SCOPE, "mode", "sometimes")
    assert bad.returncode != 0 and "not a mode" in bad.stderr
    wrong = reelbot(settings, "policy", "web:user:u1", "show")
    assert wrong.returncode != 0 and "PLATFORM:server:ID" in wrong.stderr
    (change,) = [e for e in await audit.entries(redis, scope=SCOPE) if e.origin == "cli"]
    assert change.action == "policy block" and change.actor.startswith("cli:")


async def test_a_clip_is_scored_before_it_is_restyled(
    queue: JobQueue, start_workers: StartWorkers, consumer: Posted, redis: ArqRedis
) -> None:
    """A video input goes through the server's policy before any GPU time goes into it."""
    from reelbot.store.results import store_input

    from .test_flow import _mp4

    await set_policy(queue, "threshold", "0")
    clip = await store_input(redis, _mp4())
    asked = ask("restyle", "watercolor --steps 2", "clip-1").model_copy(update={"video_ref": clip})
    done = await _run(queue, start_workers, asked)
    assert (done.status, done.error_code) == (JobStatus.FAILED, "refused")
    assert "video you sent" in (done.error_message or "") and done.result is None
    assert "encoding" not in done.times and "running" not in done.times  # no GPU time spent
    assert await used(queue) == 0
