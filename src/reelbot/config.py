"""Settings: ``REELBOT_*`` environment variables and an optional ``reelbot.toml``.

Built once by the entry point (``reelbot.cli``) and passed down; nothing reads the environment
at import time. A bad or unknown setting stops start-up with one line naming the variable.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from reelbot.catalog import Task
from reelbot.content import OutputMode, check_pattern
from reelbot.errors import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ENV_PREFIX = "REELBOT_"
SectionT = TypeVar("SectionT", bound=BaseModel)


def default_data_dir() -> Path:
    """A per-user data directory (XDG on Linux)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "reelbot"


class CoreSection(BaseModel):
    """The queue and its Redis, shared by every process."""

    redis_url: str | None = Field(
        default=None, description="Redis for jobs, quotas and results; unset: the default URL"
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    owner_ids: Annotated[tuple[str, ...], NoDecode] = ()
    image_queue: str = "reelbot:image"
    video_queue: str = "reelbot:video"
    max_queued: int = Field(default=500, ge=1, description="global queue cap")
    result_ttl_s: int = Field(default=24 * 3600, ge=60)
    history_days: int = Field(
        default=30, ge=1, le=3650, description="days a job's record (spec, buttons) is kept"
    )
    default_count: int = Field(
        default=1, ge=1, le=4, description="images per image command without --n (a grid)"
    )
    heartbeat_s: float = Field(default=2.0, gt=0)
    dead_worker_s: float = Field(default=10.0, gt=0)
    public_url: str | None = Field(
        default=None,
        description="where the web chat is reachable from outside (https://…); set: Discord "
        "and Telegram image results get an Edit region button, a signed link to the web editor",
    )
    edit_link_key: SecretStr | None = Field(
        default=None,
        description="key that signs Edit region links; unset: 32 random bytes made once in Redis",
    )

    @field_validator("owner_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("owner_ids")
    @classmethod
    def _check_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            platform, _, user = item.partition(":")
            if not platform or not user:
                raise ValueError(f"{item!r} is not PLATFORM:ID (e.g. discord:123)")
        return value

    @field_validator("public_url", "edit_link_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value  # compose's ${VAR:-} passes an empty string

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError("use the address people open, e.g. https://reelbot.example.com")
        return value.rstrip("/") if value is not None else None

    @field_validator("edit_link_key")
    @classmethod
    def _check_link_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("use at least 16 random characters (openssl rand -hex 32)")
        return value


class DiscordSection(BaseModel):
    """``reelbot discord``: the Discord adapter."""

    discord_token: SecretStr | None = None
    discord_api_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str | None = None
    discord_guild_id: str | None = Field(default=None, description="sync commands to one guild")


class TelegramSection(BaseModel):
    """``reelbot telegram``: the Telegram adapter."""

    telegram_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_url: str | None = Field(
        default=None, description="public HTTPS URL Telegram posts updates to; unset: polling"
    )
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_listen: str = Field(
        default="127.0.0.1:8443", description="host:port the webhook server binds"
    )
    telegram_max_upload_mb: int | None = Field(
        default=None, ge=1, le=2000, description="a local Bot API server takes up to 2000 MB"
    )

    @field_validator("telegram_webhook_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("use HOST:PORT, e.g. 127.0.0.1:8443")
        return value


class WebSection(BaseModel):
    """``reelbot web``: the local web chat."""

    web_port: int = Field(default=8080, ge=1, le=65535)
    web_host: str = "127.0.0.1"
    web_token: SecretStr | None = Field(
        default=None, description="access token the web chat requires (bearer or cookie)"
    )


class WorkerSection(BaseModel):
    """``reelbot worker``: models, device and the GPU options."""

    models: str = Field(default="default", description="tiny, default, or a TOML file")
    styles_file: Path | None = None
    device: str = "auto"
    job_timeout_factor: float = Field(default=4.0, gt=0)
    stall_s: float = Field(
        default=600.0, gt=0, description="no pipeline step for this long: the job is failed"
    )
    memory_budget_gb: float | None = Field(default=None, gt=0)
    compile: bool | None = Field(
        default=None, description="compile the denoiser's blocks; unset: on for CUDA only"
    )
    attention_backend: str | None = Field(
        default=None, description="a diffusers attention backend; unset: probed (flash, sage, SDPA)"
    )
    vae_tiling: bool | None = Field(
        default=None, description="tile VAE decodes; unset: by image or video size and GPU memory"
    )
    offload: bool = Field(
        default=True, description="model CPU offload when a model is over the memory budget"
    )
    # 1 (off): bench/RESULTS.md shows batch 8 only 1-6 % faster per image at 1024² on an H200.
    batch_max: int = Field(default=1, ge=1, le=16, description="image jobs per pipeline call")
    affinity_wait_s: float = Field(
        default=30.0,
        ge=0,
        description="a worker prefers jobs for a model it has loaded; none waits this much "
        "longer than in arrival order (0: arrival order)",
    )
    upscale_max_side: int = Field(
        default=4096, ge=64, le=16384, description="the long side /upscale stops at"
    )
    video_max_s: float = Field(
        default=20.0, gt=0, le=600, description="the longest video Extend makes, in seconds"
    )
    video_input_max_s: float = Field(
        default=60.0, gt=0, le=3600, description="the longest clip /restyle and Extend take in"
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda", "mps") and not value.startswith("cuda:"):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value


class QuotaSection(BaseModel):
    """Deployment-wide quota defaults (servers, roles and users refine them in Redis)."""

    quota_daily: float = Field(default=200.0, ge=0, description="credits a user may spend a day")
    quota_concurrent: int = Field(default=50, ge=0, description="jobs in flight per user")
    quota_cooldown_s: float = Field(default=0.0, ge=0, description="seconds between submits")
    quota_queue: int = Field(default=200, ge=0, description="jobs in flight per server")
    quota_reset_hour: int = Field(default=0, ge=0, le=23, description="UTC hour budgets reset")
    fair_spacing_s: float = Field(
        default=2.0, ge=0, description="queue gap between one server's jobs, for fair order"
    )


class SafetySection(BaseModel):
    """Content safety: prompt blocklist and the NSFW check of results."""

    blocked_words: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="words refused in every prompt (comma-separated)"
    )
    blocked_patterns: tuple[str, ...] = Field(
        default=(), description="regular expressions refused in every prompt (TOML list)"
    )
    nsfw_check: bool = Field(
        default=True, description="classify every result (needs onnxruntime on the worker)"
    )
    nsfw_threshold: float = Field(
        default=0.8, ge=0, le=1, description="classifier score at which a result is flagged"
    )
    output_policy: OutputMode = Field(
        default=OutputMode.BLOCK, description="flagged results outside NSFW channels"
    )
    nsfw_channel_policy: OutputMode = Field(
        default=OutputMode.ALLOW, description="flagged results in channels marked NSFW"
    )

    @field_validator("blocked_words", mode="before")
    @classmethod
    def _split_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("blocked_patterns")
    @classmethod
    def _check_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            check_pattern(pattern)
        return value


class OperationsSection(BaseModel):
    """Metrics and logs."""

    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus /metrics port; unset: off"
    )
    metrics_host: str = Field(default="0.0.0.0", description="address /metrics binds")
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line, for log collectors"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(
    CoreSection,
    DiscordSection,
    TelegramSection,
    WebSection,
    WorkerSection,
    QuotaSection,
    SafetySection,
    OperationsSection,
    BaseSettings,
):
    """Every setting reelbot reads, with its default: the sections above, one flat namespace.

    Each process reads its own section (noteburst's ``config/{base,frontend,worker}``); the
    variable names stay ``REELBOT_<FIELD>`` and the same keys work in ``reelbot.toml``.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        toml_file="reelbot.toml",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    def section(self, kind: type[SectionT]) -> SectionT:
        """One section's values as its own model, e.g. ``settings.section(TelegramSection)``."""
        return kind.model_validate({name: getattr(self, name) for name in kind.model_fields})

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit values, then the environment, then ``reelbot.toml``."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def effective_redis_url(self) -> str:
        """The Redis URL to connect to."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def history_ttl_s(self) -> int:
        """How long a finished job's record lives: ``history_days``, never less than its result."""
        return max(self.history_days * 86400, self.result_ttl_s)

    def queue_for(self, task: Task) -> str:
        """The arq queue a task's jobs go to, so image and video workers can be separate pools."""
        return self.video_queue if task.is_video else self.image_queue


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any problem into one ``ConfigError`` line naming the variable."""
    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    for key in os.environ:
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
            raise ConfigError(f"{key}: unknown setting (check the spelling; see the README)")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "settings"
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {err['msg']}") from None
