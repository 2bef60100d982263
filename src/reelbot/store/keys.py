"""Every Redis key and channel reelbot's queue layer uses, in one place.

arq's own keys (``arq:job:``, ``arq:in-progress:``, ``arq:retry:``) are used as arq names
them; ours all start with ``reelbot:`` so an operator can tell them apart in ``SCAN``.
"""

from __future__ import annotations

from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix

PREFIX = "reelbot:"
JOB_INDEX = f"{PREFIX}jobs"
"""Sorted set of every job id by submit time (trimmed), for ``reelbot jobs list``."""
WORKERS = f"{PREFIX}workers"
"""Set of worker ids that have announced themselves; stale ones are pruned by readers."""
CONTROL_CHANNEL = f"{PREFIX}control"
"""Pub/sub channel for cancel requests; workers also poll the cancel keys as a fallback."""
INDEX_LIMIT = 10_000


def record(job_id: str) -> str:
    """The JSON job record."""
    return f"{PREFIX}job:{job_id}"


def affinity(job_id: str) -> str:
    """A queued job's model (``m``), submit time in ms (``t``), cost in credits (``c``) and
    when a younger job was first taken ahead of it (``s``): a small hash the workers'
    model-affinity choice reads."""
    return f"{PREFIX}affinity:{job_id}"


def user_jobs(platform: str, user_id: str) -> str:
    """Sorted set of one user's job ids by submit time."""
    return f"{PREFIX}user:{platform}:{user_id}"


def cancel_flag(job_id: str) -> str:
    """Set while a cancel of a fetched or running job is pending."""
    return f"{PREFIX}cancel:{job_id}"


def input_image(ref: str) -> str:
    """Input image bytes stored by an adapter."""
    return f"{PREFIX}input:{ref}"


def result(job_id: str) -> str:
    """Encoded result bytes (the Redis result store)."""
    return f"{PREFIX}result:{job_id}"


def progress(job_id: str) -> str:
    """The latest progress event of a job, for listings."""
    return f"{PREFIX}progress:{job_id}"


def progress_channel(platform: str) -> str:
    """Pub/sub channel of progress and status events for one platform's adapter."""
    return f"{PREFIX}progress:{platform}"


def wake_channel(queue: str) -> str:
    """Pub/sub channel a submit publishes on so idle workers poll at once."""
    return f"{PREFIX}wake:{queue}"


def durations(model: str) -> str:
    """Recent seconds-per-credit samples of a model, newest first."""
    return f"{PREFIX}durations:{model}"


def worker(worker_id: str) -> str:
    """A worker's heartbeat (expires when it stops beating)."""
    return f"{PREFIX}worker:{worker_id}"


def delivery_queue(platform: str) -> str:
    """The arq queue a platform's delivery consumer reads."""
    return f"{PREFIX}deliver:{platform}"


def delivery_job_id(job_id: str) -> str:
    """The arq job id of a job's delivery, so it is enqueued once."""
    return f"deliver-{job_id}"


def arq_job(job_id: str) -> str:
    """arq's serialized job definition."""
    return job_key_prefix + job_id


def arq_in_progress(job_id: str) -> str:
    """arq's in-progress key; here also the job's lease (its value is the holder's id)."""
    return in_progress_key_prefix + job_id


def arq_retry(job_id: str) -> str:
    """arq's try counter."""
    return retry_key_prefix + job_id


EDIT_LINK_KEY = f"{PREFIX}edit-links:key"
"""The key that signs Edit region links when ``REELBOT_EDIT_LINK_KEY`` is unset (made once)."""


def edit_link_claim(link_id: str) -> str:
    """Which browser opened an Edit region link first (its secret, until the link expires)."""
    return f"{PREFIX}edit-links:claim:{link_id}"
