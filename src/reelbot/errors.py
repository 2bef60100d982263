"""reelbot's error tree.

Every error that crosses a process boundary carries a stable ``code`` (it travels on the wire
inside a job outcome) and, where it is the user's business, a ``user_message`` fit to show in
chat as it is. Every code that crosses the wire is a class's ``code``; ``ERROR_CODES`` maps it
back to the class and ``error_from`` rebuilds the error from a stored outcome::

    ReelbotError                      code "internal"
    ├── UserError                     safe to show; never retried
    │   ├── InvalidOption             a flag or option is unknown or out of range
    │   ├── InvalidPrompt             empty or too long
    │   ├── ContentRefused            the prompt or the result is refused by content policy
    │   ├── InvalidImage              not an image, truncated, too large, a decompression bomb
    │   │   └── InvalidMask           an inpainting mask that is all black or all white
    │   ├── MissingImage              the task needs an input image and none came
    │   ├── InvalidVideo              not a video, truncated, too long, too big, too many frames
    │   ├── MissingVideo              the task needs an input video and none came
    │   ├── UnknownModel              no such model, or it does not serve that task
    │   ├── QuotaExceeded             over a budget; ``retry_after`` when it resets
    │   ├── Busy                      the queue is full; ``retry_after`` as a hint
    │   ├── NotAllowed                an admin command from a non-admin
    │   ├── JobNotFound               no such job (or not yours)
    │   ├── LinkRefused               an Edit region link forged, expired, opened elsewhere
    │   ├── Cancelled                 the job was cancelled
    │   ├── JobTimeout                the job ran past its time limit; ``limit_s``
    │   └── OutputTooLarge            no encoding fits the platform's upload limit; ``limit_bytes``
    ├── TransientError                worth a retry; ``retry_after`` where known
    │   ├── OutOfMemory               the accelerator ran out of memory
    │   ├── BackendUnavailable        Redis or a platform API cannot be reached
    │   ├── RateLimited               a platform said 429
    │   ├── WorkerLost                the worker died too often while running the job
    │   └── JobStalled                the pipeline made no step for too long; ``stall_s``
    ├── DeliveryFailed                the result could not be posted
    │   ├── Undeliverable             the platform refused the post, or every try failed
    │   └── ResultExpired             the stored result expired before it was posted
    └── ConfigError                   stops start-up, with one line naming the setting
        └── ModelUnavailable          a model cannot be loaded (not downloaded and offline, gated,
                                      a broken download); ``model``, ``reason``
"""

from __future__ import annotations

from typing import ClassVar


class ReelbotError(Exception):
    """Base of every error reelbot raises on purpose."""

    code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "Something went wrong."
    shown: str | None = None
    """A message already written for the user (a stored outcome's, see ``error_from``)."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def user_message(self) -> str:
        """Text fit to show to the person who asked."""
        return self.default_message if self.shown is None else self.shown


class UserError(ReelbotError):
    """The request cannot be served as asked; the message says what to do."""

    code = "user_error"
    default_message = "That request could not be run."

    @property
    def user_message(self) -> str:
        """User errors are written for the user, so the message is shown as it is."""
        return self.message


class InvalidOption(UserError):
    """A flag or option is unknown, malformed or outside its range."""

    code = "invalid_option"
    option: str = ""

    def __init__(self, message: str, *, option: str) -> None:
        super().__init__(message)
        self.option = option


class InvalidPrompt(UserError):
    """The prompt is empty, too long, or refused."""

    code = "invalid_prompt"


class ContentRefused(UserError):
    """The prompt or the result goes against the server's content policy.

    The message never names what matched, so a refusal cannot be used to probe the list.
    """

    code = "refused"
    default_message = "That prompt was refused by this server's content policy."


class InvalidImage(UserError):
    """An input image that cannot be used."""

    code = "invalid_image"


class InvalidMask(InvalidImage):
    """An inpainting mask with nothing to change (all black) or everything (all white)."""

    code = "invalid_mask"


class MissingImage(UserError):
    """The task needs an input image and none came with the command."""

    code = "missing_image"


class InvalidVideo(UserError):
    """An input video that cannot be used (``reelbot.video_inputs`` says why in one sentence)."""

    code = "invalid_video"


class MissingVideo(UserError):
    """The task needs an input video (``/restyle``) and none came with the command."""

    code = "missing_video"


class UnknownModel(UserError):
    """The model does not exist in this deployment, or does not serve the task."""

    code = "unknown_model"


class QuotaExceeded(UserError):
    """A budget is spent; ``retry_after`` says in how many seconds it resets."""

    code = "quota_exceeded"
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Busy(UserError):
    """The queue is full; try again later."""

    code = "busy"
    retry_after: float | None = None

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotAllowed(UserError):
    """The caller may not do this (admin commands)."""

    code = "not_allowed"


class JobNotFound(UserError):
    """No job with that id, or not one of the caller's."""

    code = "job_not_found"


class LinkRefused(UserError):
    """An Edit region link that does not open: ``reason`` is ``invalid`` (forged or mangled),
    ``expired``, ``claimed`` (another browser opened it first) or ``unopened`` (used before
    its page was opened)."""

    code = "link_refused"
    reason: str = ""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class Cancelled(UserError):
    """The job was cancelled before it finished."""

    code = "cancelled"
    default_message = "Cancelled."


class JobTimeout(UserError):
    """The job ran past the time its cost allows (the worker stops it at ``limit_s``)."""

    code = "timeout"
    default_message = "This job took too long and was stopped. Try fewer steps or frames."
    limit_s: float | None = None

    def __init__(self, *, limit_s: float | None = None) -> None:
        message = None
        if limit_s is not None:
            message = (
                f"This job ran past its {round(limit_s)}s limit and was stopped. "
                "Try fewer steps, fewer frames or a smaller size."
            )
        super().__init__(message)
        self.limit_s = limit_s


class OutputTooLarge(UserError):
    """No encoding of the result fits the platform's upload limit of ``limit_bytes``."""

    code = "too_large"
    default_message = (
        "The result could not be made small enough for this chat's upload limit. "
        "Try a shorter or smaller video."
    )
    limit_bytes: int | None = None

    def __init__(self, *, limit_bytes: int | None = None) -> None:
        message = None
        if limit_bytes is not None:
            message = (
                "The result could not be made small enough for this chat's "
                f"{limit_bytes // 1_000_000} MB upload limit. Try a shorter or smaller video."
            )
        super().__init__(message)
        self.limit_bytes = limit_bytes


class TransientError(ReelbotError):
    """A failure that may pass; worth a bounded retry."""

    code = "transient"
    default_message = "A temporary problem stopped this job. Please try again in a minute."
    retry_after: float | None = None

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OutOfMemory(TransientError):
    """The accelerator ran out of memory."""

    code = "out_of_memory"
    default_message = (
        "The GPU ran out of memory for this job. Try a smaller size, fewer frames or fewer steps."
    )


class BackendUnavailable(TransientError):
    """Redis or a platform API cannot be reached."""

    code = "unavailable"
    default_message = "reelbot is temporarily unavailable. Please try again in a minute."


class RateLimited(TransientError):
    """A platform answered 429."""

    code = "rate_limited"


class WorkerLost(TransientError):
    """The worker running the job died, more times than a retry allows (arq gave up on it)."""

    code = "worker_lost"
    default_message = (
        "This job stopped its worker several times and was given up. "
        "Try fewer frames, fewer steps or a smaller size."
    )


class JobStalled(TransientError):
    """The pipeline made no denoising step for ``stall_s``; the watchdog stopped the job."""

    code = "stalled"
    default_message = "This job made no progress and was stopped. Please try again."
    stall_s: float | None = None

    def __init__(self, *, stall_s: float | None = None) -> None:
        message = None
        if stall_s is not None:
            message = (
                f"This job made no progress for {round(stall_s)}s and was stopped. "
                "Please try again."
            )
        super().__init__(message)
        self.stall_s = stall_s

    @property
    def user_message(self) -> str:
        """The message is built here from ``stall_s``, never from other text: shown as it is."""
        return self.message


class DeliveryFailed(ReelbotError):
    """The result could not be posted to the platform."""

    code = "delivery_failed"
    default_message = "The result could not be posted."


class Undeliverable(DeliveryFailed):
    """The platform refused the post, or every post attempt failed; the delivery gave up."""

    code = "undeliverable"
    default_message = "The result could not be posted here."


class ResultExpired(DeliveryFailed):
    """The stored result expired before it could be posted."""

    code = "result_expired"
    default_message = "The result expired before it could be posted. Please run it again."


class ConfigError(ReelbotError):
    """A setting is missing or wrong; start-up stops with one line naming it."""

    code = "config"

    @property
    def user_message(self) -> str:
        """Configuration errors are for the operator, shown as they are."""
        return self.message


class ModelUnavailable(ConfigError):
    """A model's weights cannot be loaded; the message names the model and what to do.

    A configuration error, not a transient one: retrying on the same machine meets the same
    missing download, licence or damaged file. ``reason`` is ``not_cached``, ``gated`` or
    ``broken``.
    """

    code = "model_unavailable"
    model: str = ""
    reason: str = ""

    def __init__(self, message: str, *, model: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason

    @property
    def user_message(self) -> str:
        """For the chat: what failed in words, without the server's paths and settings."""
        if self.shown is not None or not self.model:
            return self.message if self.shown is None else self.shown
        why = _UNAVAILABLE.get(self.reason, "its weights could not be read")
        return (
            f"Model {self.model} cannot be loaded on this server: {why}. "
            "Pick another model with --model, or tell the server's operator."
        )


_UNAVAILABLE = {
    "not_cached": "its weights are not downloaded and the model hub cannot be reached",
    "gated": "its weights need a model hub token this server lacks",
    "broken": "its downloaded weights are damaged",
}


ERROR_CODES: dict[str, type[ReelbotError]] = {
    cls.code: cls
    for cls in (
        ReelbotError,
        UserError,
        InvalidOption,
        InvalidPrompt,
        ContentRefused,
        InvalidImage,
        InvalidMask,
        MissingImage,
        InvalidVideo,
        MissingVideo,
        UnknownModel,
        QuotaExceeded,
        Busy,
        NotAllowed,
        JobNotFound,
        LinkRefused,
        Cancelled,
        JobTimeout,
        OutputTooLarge,
        TransientError,
        OutOfMemory,
        BackendUnavailable,
        RateLimited,
        WorkerLost,
        JobStalled,
        DeliveryFailed,
        Undeliverable,
        ResultExpired,
        ConfigError,
        ModelUnavailable,
    )
}
"""Stable wire code → class, for turning an outcome back into an error."""


def error_from(code: str | None, message: str | None) -> ReelbotError:
    """The error a stored outcome (``error_code``, ``error_message``) stands for.

    The class is ``ERROR_CODES[code]``, a plain ``ReelbotError`` for a code this build does not
    know. The stored message was written for the user, so it is the ``user_message`` too (the
    class's default where none was stored). Details that are not stored (``retry_after``,
    ``option``, ``limit_s`` …) are left at ``None`` or empty.
    """
    cls = ERROR_CODES.get(code or "", ReelbotError)
    error = cls.__new__(cls)
    ReelbotError.__init__(error, message)
    error.shown = error.message
    return error
