"""Configuration from ``KAYLE_*`` environment variables and an optional ``.env`` (README: Configuration).

:func:`load_config` validates everything a process needs at start-up and raises
:class:`ConfigError` with one line naming the variable and what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from receiver.connections import check_url
from receiver.keyring import KeyFileError, Keyring, load_keyring

#: A Sentry DSN: http(s)://<public key>@<host>[:port][/path]/<project id>.
_SENTRY_DSN = re.compile(r"https?://[^@/:\s]+(:[^@/\s]*)?@[^/@\s]+(/[^\s]*)?/\d+/?")
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret

#: A list setting: comma-separated in the environment.
CommaList = Annotated[list[str], NoDecode]
IntList = Annotated[list[NonNegativeInt], NoDecode]


class ConfigError(Exception):
    """Unusable configuration; ``str(error)`` is one line that names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAYLE_", env_file=".env", extra="ignore")

    signing_secrets: CommaList = []
    signing_secrets_file: Path | None = None
    key_dir: Path | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password_file: Path | None = None
    redis_min_replicas: int = Field(0, ge=0, le=100)
    redis_replica_timeout_ms: int = Field(500, ge=1, le=3000)
    path: str = "/webhooks/kayle"
    tolerance_seconds: int = Field(300, ge=0)
    dedup_ttl_seconds: int = Field(864000, ge=60)
    max_pending_events: int = Field(100_000, ge=0)
    max_body_bytes: int = Field(262144, ge=1024)
    body_timeout_seconds: float = Field(10.0, gt=0)
    decrypt_threads: int = Field(2, ge=0, le=64)
    header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    max_connections: int | None = Field(None, ge=1)
    receiver_processes: int | None = Field(None, ge=1, le=256)
    admin_host: str = Field("127.0.0.1", min_length=1)
    admin_port: int = Field(9000, ge=1, le=65535)
    queue: str = Field("kayle", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    retry_intervals: IntList = [10, 60, 300, 1800, 7200]
    job_timeout_seconds: int = Field(600, ge=1)
    failure_ttl_seconds: int = Field(864000, ge=60)
    handlers: CommaList = []
    load_entry_points: bool = True
    abandoned_job_seconds: int = Field(180, ge=6)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    api_url: str = "https://api.kayle.id"
    endpoint_id: str = ""
    sentry_dsn: SecretStr | None = None
    sentry_sample_rate: float = Field(1.0, ge=0, le=1)

    @field_validator("signing_secrets", "handlers", "retry_intervals", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _window_outlives_events(self) -> Settings:
        attempts = 1 + len(self.retry_intervals)
        life = self.job_timeout_seconds * attempts + sum(self.retry_intervals)
        if self.dedup_ttl_seconds < max(life, self.failure_ttl_seconds):
            raise ValueError(
                f"KAYLE_DEDUP_TTL_SECONDS ({self.dedup_ttl_seconds} s) must be at least an event's whole life, "
                f"{life} s (KAYLE_JOB_TIMEOUT_SECONDS x {attempts} attempts + KAYLE_RETRY_INTERVALS), and at least "
                f"KAYLE_FAILURE_TTL_SECONDS ({self.failure_ttl_seconds} s): a redelivery would be taken for a new event"
            )
        return self

    @field_validator("sentry_dsn", "redis_password_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("sentry_dsn")
    @classmethod
    def _sentry_dsn_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SENTRY_DSN.fullmatch(value.get_secret_value()):
            raise ValueError("must be a Sentry DSN, https://<public key>@<host>/<project id> (see your Sentry project)")
        return value

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_shape(cls, value: str) -> str:
        check_url(value)
        return value

    @model_validator(mode="after")
    def _one_redis_password(self) -> Settings:
        if self.redis_password_file is not None and "@" in self.redis_url.partition("://")[2]:
            raise ValueError(
                "KAYLE_REDIS_PASSWORD_FILE and a password in KAYLE_REDIS_URL are both set: keep the file and "
                "take the user:password@ part out of the URL"
            )
        return self


@dataclass(frozen=True)
class Config:
    """Settings checked and loaded: what a receiver or a worker runs with."""

    settings: Settings
    secrets: tuple[str, ...]
    keyring: Keyring


def read_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        if not error["loc"]:  # a rule across several settings: its message names them
            raise ConfigError(str(error["msg"]).removeprefix("Value error, ")) from None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"KAYLE_{str(error['loc'][0]).upper()}: {message}") from None


def load_config(*, need_secrets: bool = True) -> Config:
    """Read and check the configuration; raise :class:`ConfigError` naming what to fix."""
    settings = read_settings()
    secrets = tuple(signing_secrets(settings)) if need_secrets else ()
    return Config(settings, secrets, keyring_of(settings))


def signing_secrets(settings: Settings) -> list[str]:
    """Every configured signing secret, from the variable then the file."""
    found = list(settings.signing_secrets)
    if settings.signing_secrets_file is not None:
        try:
            lines = settings.signing_secrets_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"KAYLE_SIGNING_SECRETS_FILE: cannot read {settings.signing_secrets_file} ({exc.strerror})"
            ) from None
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not found:
        raise ConfigError(
            "KAYLE_SIGNING_SECRETS: no signing secret configured; set it (or KAYLE_SIGNING_SECRETS_FILE) "
            "to the whsec_... secret Kayle returned for the endpoint"
        )
    for position, secret in enumerate(found, start=1):
        if not secret.startswith(SECRET_PREFIX) or len(secret) <= len(SECRET_PREFIX):
            raise ConfigError(
                f"KAYLE_SIGNING_SECRETS: secret #{position} does not look like a Kayle secret "
                f"(it must start with {SECRET_PREFIX}; use the whole string Kayle returned)"
            )
    return found


def redis_password(settings: Settings) -> str | None:
    """The Redis password from ``KAYLE_REDIS_PASSWORD_FILE`` (its first line), or ``None`` when it is not set."""
    path = settings.redis_password_file
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"KAYLE_REDIS_PASSWORD_FILE: cannot read {path} ({exc.strerror})") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"KAYLE_REDIS_PASSWORD_FILE: {path} is empty; write the Redis password on its first line")
    return lines[0].strip()


def key_dir(settings: Settings, option: str | None = None) -> Path:
    """``KAYLE_KEY_DIR``; the error names ``option`` too when a command takes one instead."""
    if settings.key_dir is None:
        alternative = f", or pass {option}" if option else ""
        raise ConfigError(f"KAYLE_KEY_DIR: not set; point it at the directory of <kid>.pem private keys{alternative}")
    return settings.key_dir


def keyring_of(settings: Settings) -> Keyring:
    try:
        return load_keyring(key_dir(settings))
    except KeyFileError as exc:
        raise ConfigError(f"KAYLE_KEY_DIR: {exc}") from None
