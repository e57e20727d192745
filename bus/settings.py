"""Settings: one frozen object per process, read from ``DATABUS_*`` variables.

Nested groups use a double underscore: ``DATABUS_KAFKA__BOOTSTRAP_SERVERS``.
An address left empty means "start the embedded server" (see ``bus.local_stack``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from bus.errors import ConfigError

__all__ = [
    "AlertSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OutboxSettings",
    "RedisSettings",
    "SchemaRegistrySettings",
    "Settings",
    "SpoolSettings",
    "load_settings",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")
Positive = Annotated[int, Field(gt=0)]


class KafkaSettings(BaseModel):
    model_config = _FROZEN

    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port]; empty starts the embedded broker"
    )
    # Tansu holds a group join for about half the session timeout: keep it short.
    session_timeout_ms: Positive = 6000
    # Tansu holds every fetch for the full wait even when data is there.
    fetch_wait_max_ms: Positive = 10
    partitions: Positive = 4
    replication_factor: Positive = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for part in value.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    def client_config(self) -> dict[str, str | int | float | bool]:
        """Settings every confluent-kafka client shares."""
        if self.bootstrap_servers is None:
            raise ConfigError("DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set and no stack started")
        conf: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        return conf


class SchemaRegistrySettings(BaseModel):
    model_config = _FROZEN

    url: str | None = Field(default=None, description="http(s)://host:port of the registry")
    basic_auth: SecretStr | None = Field(default=None, description="user:password")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        return value.rstrip("/")

    def client_config(self) -> dict[str, str]:
        if self.url is None:
            raise ConfigError("DATABUS_SCHEMA_REGISTRY__URL is not set and no stack started")
        conf = {"url": self.url}
        if self.basic_auth is not None:
            conf["basic.auth.user.info"] = self.basic_auth.get_secret_value()
        return conf


class RedisSettings(BaseModel):
    model_config = _FROZEN

    url: str | None = Field(default=None, description="redis://host:port/db of the IOC store")

    @field_validator("url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis:// URL, got {value!r}")
        return value


class MetricsSettings(BaseModel):
    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")


class AlertSettings(BaseModel):
    """Alert rules come from a TOML file (``stream_processors/alert_rules.toml`` unless
    ``rules_file`` names another). The overdue fields below predate the file: set
    explicitly (``DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD``, ...), they override the file's
    ``dossier_overdue_rate`` values (``stream_processors.rules_config.rules_from_settings``);
    left unset, the file decides."""

    model_config = _FROZEN

    rules_file: Path | None = Field(
        default=None, description="alert rules TOML; empty: the packaged alert_rules.toml"
    )
    overdue_rate_threshold: float = Field(default=0.30, gt=0, lt=1)
    # Hysteresis: an alert clears only below this rate, so a unit hovering at the
    # threshold does not raise a storm.
    overdue_rate_clear: float = Field(default=0.25, gt=0, lt=1)
    window_days: Positive = 30
    min_dossiers: Positive = 10
    evaluate_every_s: float = Field(default=30.0, gt=0)

    @field_validator("rules_file", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _clear_below_raise(self) -> AlertSettings:
        # A clear rate above the raise rate would resolve an alert right after raising it.
        if self.overdue_rate_clear > self.overdue_rate_threshold:
            raise ValueError(
                f"DATABUS_ALERTS__OVERDUE_RATE_CLEAR ({self.overdue_rate_clear}) must not exceed "
                f"DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD ({self.overdue_rate_threshold})"
            )
        return self


class SpoolSettings(BaseModel):
    """The Publisher's durable local spool; no path means no spool (events live only in
    librdkafka's memory queue until the broker acknowledges them)."""

    model_config = _FROZEN

    path: Path | None = Field(default=None, description="SQLite file; one per process")
    max_bytes: Positive = Field(default=256 * 1024 * 1024, description="payload bound")


class OutboxSettings(BaseModel):
    """The outbox poller (``producers.outbox``): the source system's database and table."""

    model_config = _FROZEN

    url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the source database, e.g. postgresql+psycopg://...",
    )
    table: str = Field(default="databus_outbox", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("url", mode="before")
    @classmethod
    def _sqlalchemy_url(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or raw == "":
            return None
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(str(raw))
        except ArgumentError:
            # never echo the value: it may hold a password
            raise ValueError(
                "not a SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db)"
            ) from None
        return value

    db_schema: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    source_system: str = Field(default="outbox", min_length=1, description="source.system")
    batch_size: Annotated[int, Field(gt=0, le=10_000)] = 500
    interval_s: float = Field(default=1.0, gt=0, description="wait when the outbox is drained")
    flush_timeout_s: float = Field(default=60.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DATABUS_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    redis: RedisSettings = RedisSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: AlertSettings = AlertSettings()
    spool: SpoolSettings = SpoolSettings()
    outbox: OutboxSettings = OutboxSettings()
    data_dir: Path = Field(default=Path(".databus"), description="embedded servers' files")
    processor_group: str = "databus-processor"
    # Records the processor's batched loop takes per poll: larger batches amortize
    # per-batch flushes; smaller ones lower latency under light load.
    processor_batch_size: Positive = 500
    sink_group: str = "databus-sink-ioc"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a bad value stops with its variable name."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            var = "DATABUS_" + "__".join(str(p).upper() for p in err["loc"])
            problems.append(f"{var}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from exc
    except SettingsError as exc:
        # e.g. DATABUS_KAFKA='{not json': pydantic-settings names only the field.
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        raise ConfigError(f"invalid settings:\n  DATABUS_{field.upper()}: {exc}") from exc
