"""Settings: one frozen object per process, read from ``DATABUS_*`` variables.

Nested groups use a double underscore: ``DATABUS_KAFKA__BOOTSTRAP_SERVERS``.
An address left empty means "start the embedded server" (see ``databus.local_stack``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from bus.errors import ConfigError

__all__ = [
    "AlertSettings",
    "HealthAxisSettings",
    "HealthIdentifierSystems",
    "KafkaSettings",
    "LogSettings",
    "MetricsSettings",
    "OpenDataSettings",
    "OutboxSettings",
    "ProcessorStateSettings",
    "RedisSettings",
    "SchemaRegistrySettings",
    "Settings",
    "SharedRepoSettings",
    "SinkSettings",
    "SpoolSettings",
    "SuperviseSettings",
    "load_settings",
]


def _long_enough(value: SecretStr) -> SecretStr:
    # a short key makes the pseudonyms of 12-digit citizen ids guessable by brute force
    if len(value.get_secret_value()) < 16:
        raise ValueError("must be at least 16 characters")
    return value


PseudonymKey = Annotated[SecretStr, AfterValidator(_long_enough)]

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
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # PEM CA bundle the brokers' TLS certificates chain to (SSL / SASL_SSL); empty: system CAs.
    ssl_ca_location: Path | None = None
    # Largest record a bus producer sends (key, value and headers): librdkafka's and the
    # broker's default. The Publisher refuses a larger event before sending it; the
    # processor dead-letters a record whose output would be larger (record_too_large).
    message_max_bytes: Annotated[int, Field(ge=1000, le=99_000_000)] = 1_000_000
    # Client certificate and key (PEM) for brokers that authenticate clients by TLS (mTLS).
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None

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

    @field_validator(
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "ssl_ca_location",
        "ssl_certificate_location",
        "ssl_key_location",
        "ssl_key_password",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _coherent_security(self) -> KafkaSettings:
        """Refuse combinations a client would ignore or fail on only at the first request."""
        problems = _security_problems(self)
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def client_config(self) -> dict[str, Any]:
        """Settings every confluent-kafka client shares: the one source of the broker's
        address and security (TLS, SASL) for every client the bus starts, and of where
        librdkafka's log lines and errors go (``bus.logs.kafka_client_logging``: the
        first occurrence, then a count per interval)."""
        from bus.logs import kafka_client_logging  # bus.logs reads LogSettings from here

        if self.bootstrap_servers is None:
            raise ConfigError("DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set and no stack started")
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **self.security_config(),
            **kafka_client_logging(),
        }

    def security_config(self) -> dict[str, str | int | float | bool]:
        """The security part of :meth:`client_config`, for a client given its own address
        (the embedded registry's ``_schemas`` client)."""
        conf: dict[str, str | int | float | bool] = {"security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.ssl_ca_location is not None:
            conf["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location is not None:
            conf["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location is not None:
            conf["ssl.key.location"] = str(self.ssl_key_location)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        return conf


def _security_problems(kafka: KafkaSettings) -> list[str]:
    """What is impossible in the Kafka security settings, each naming its variable."""
    var = "DATABUS_KAFKA__"
    protocol = kafka.security_protocol
    sasl = protocol.startswith("SASL_")
    tls = protocol.endswith("SSL")
    problems: list[str] = []
    if sasl:
        for name, value in (
            ("SASL_MECHANISM", kafka.sasl_mechanism),
            ("SASL_USERNAME", kafka.sasl_username),
            ("SASL_PASSWORD", kafka.sasl_password),
        ):
            if value is None:
                problems.append(f"{var}{name} must be set when {var}SECURITY_PROTOCOL={protocol}")
    else:
        for name, value in (
            ("SASL_MECHANISM", kafka.sasl_mechanism),
            ("SASL_USERNAME", kafka.sasl_username),
            ("SASL_PASSWORD", kafka.sasl_password),
        ):
            if value is not None:
                problems.append(
                    f"{var}{name} is set but {var}SECURITY_PROTOCOL={protocol} does not use "
                    "SASL: use SASL_SSL (or SASL_PLAINTEXT), or unset it"
                )
    tls_files = (
        ("SSL_CA_LOCATION", kafka.ssl_ca_location),
        ("SSL_CERTIFICATE_LOCATION", kafka.ssl_certificate_location),
        ("SSL_KEY_LOCATION", kafka.ssl_key_location),
    )
    for name, path in tls_files:
        if path is None:
            continue
        if not tls:
            problems.append(
                f"{var}{name} is set but {var}SECURITY_PROTOCOL={protocol} does not use TLS: "
                "use SSL (or SASL_SSL), or unset it"
            )
        elif not path.is_file():
            problems.append(f"{var}{name}: no readable file at {path}")
    if tls and (kafka.ssl_certificate_location is None) != (kafka.ssl_key_location is None):
        given, missing = (
            ("SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION")
            if kafka.ssl_key_location is None
            else ("SSL_KEY_LOCATION", "SSL_CERTIFICATE_LOCATION")
        )
        problems.append(
            f"{var}{missing} must be set with {var}{given} (a client certificate needs its key)"
        )
    if kafka.ssl_key_password is not None and kafka.ssl_key_location is None:
        problems.append(f"{var}SSL_KEY_PASSWORD is set without {var}SSL_KEY_LOCATION")
    return problems


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


class LogSettings(BaseModel):
    """How the bus's processes log (``bus.logs``): ``DATABUS_LOG__FORMAT``,
    ``DATABUS_LOG__LEVEL``, ``DATABUS_LOG__REPEAT_EVERY_S``."""

    model_config = _FROZEN

    format: Literal["text", "json"] = Field(
        default="text", description="text lines, or one JSON object per line"
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # librdkafka's repeated errors (a broker down): the first line at once, then one
    # line with their count per this many seconds.
    repeat_every_s: float = Field(default=60.0, gt=0, le=86400)

    @field_validator("format", "level", mode="before")
    @classmethod
    def _case(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        return value.lower() if value.lower() in ("text", "json") else value.upper()


class MetricsSettings(BaseModel):
    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    final_scrape_s: float = Field(
        default=20.0,
        ge=0,
        le=300,
        description="Before a process exits on an error, keep serving /metrics until the "
        "next scrape, at most this long, so the failure counted last reaches Prometheus "
        "(a little over the 15 s scrape interval; 0: exit at once)",
    )


class AlertSettings(BaseModel):
    """Alert rules come from a TOML file (``stream_processors/alerts/rules/alert_rules.toml`` unless
    ``rules_file`` names another). The overdue fields below predate the file: set
    explicitly (``DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD``, ...), they override the file's
    ``dossier_overdue_rate`` values (``stream_processors.alerts.rules.config.rules_from_settings``);
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


class ProcessorStateSettings(BaseModel):
    """Where and how the processor keeps its state locally (``stream_processors.state_store``).
    The changelog topics are the source of truth: this is a cache on disk, nothing to back up."""

    model_config = _FROZEN

    state_dir: Path | None = Field(
        default=None, description="empty: <data_dir>/processor-state; one slot-N per worker"
    )
    # "rocksdb": entity state on local disk, a restart replays only the changelog tail;
    # "memory": every entity in RAM, rebuilt from the whole changelog at each assignment.
    entity_store: Literal["rocksdb", "memory"] = "rocksdb"
    # Decoded entities kept in memory (~1 KB each); the rest is read from disk.
    cache_entries: Annotated[int, Field(ge=1, le=50_000_000)] = 200_000
    # RocksDB's block cache (compressed pages of the entity files).
    block_cache_mb: Annotated[int, Field(ge=1, le=65_536)] = 64
    # Changelog records per partition after which the owner writes a snapshot of the
    # partition's entities (a worker with an empty disk restores from the latest one and
    # the changelog after it: bounded by entities, not history). 0: never.
    snapshot_every: Annotated[int, Field(ge=0)] = 500_000
    # Faust's tables (alert rules, open alerts, quality): "rocksdb" keeps them on disk.
    table_store: Literal["rocksdb", "memory"] = "rocksdb"
    # How the batch loop's consumers share partitions: "cooperative-sticky" moves only
    # the partitions that change owner; "range" is eager (every member drops all).
    assignment: Literal["cooperative-sticky", "range", "roundrobin"] = "cooperative-sticky"

    def resolved_state_dir(self, data_dir: Path) -> Path:
        return self.state_dir if self.state_dir is not None else data_dir / "processor-state"


class SharedRepoSettings(BaseModel):
    """The shared repository (``sinks.shared_repo``): PostgreSQL in production, a SQLite
    file under ``data_dir`` when no URL is given."""

    model_config = _FROZEN

    url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://...; empty: SQLite under data_dir",
    )
    db_schema: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    batch_size: Annotated[int, Field(gt=0, le=10_000)] = 500

    @field_validator("url", mode="before")
    @classmethod
    def _sqlalchemy_url(cls, value: object) -> object:
        return OutboxSettings._sqlalchemy_url(value)

    def resolved_url(self, data_dir: Path) -> str:
        """The URL to connect to: the configured one, else the embedded SQLite file."""
        if self.url is not None:
            return self.url.get_secret_value()
        return f"sqlite:///{(data_dir / 'shared_repo.sqlite').resolve()}"


class OpenDataSettings(BaseModel):
    """The open-data export (``sinks.open_data``) of datasets classified public."""

    model_config = _FROZEN

    out_dir: Path | None = Field(default=None, description="empty: <data_dir>/open_data")
    interval_s: float = Field(default=24 * 3600.0, gt=0, description="time between exports")
    # Aggregate cells counting fewer entities than this are published blank and flagged.
    min_count: Positive = 5
    base_uri: str = Field(
        default="https://opendata.example.invalid/databus/",
        description="where the portal serves the files; download URLs and DCAT ids start here",
    )
    publisher_name: str = Field(default="UBND tỉnh Đồng Nai", min_length=1)
    license_uri: str = "https://creativecommons.org/licenses/by/4.0/"
    # CSV files start with a UTF-8 byte-order mark, so that Excel on Windows reads
    # Vietnamese right; turn off for consumers that choke on it.
    csv_bom: bool = True
    # DCAT-AP: the catalogue's foaf:homepage (the portal page; empty: base_uri), its
    # contact point (name empty: publisher_name; URL empty: the homepage), and the
    # administrative code of the province (dct:spatial, with the bounding box of
    # schemas/data/province_area.csv).
    homepage: str = ""
    contact_name: str = ""
    contact_email: str = Field(default="", pattern=r"^([^@\s]+@[^@\s]+\.[^@\s]+)?$")
    contact_url: str = ""
    province_code: str = Field(default="75", pattern=r"^\d{2}$")

    @field_validator("base_uri")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URI, got {value!r}")
        return value if value.endswith("/") else value + "/"

    @field_validator("homepage", "contact_url", "license_uri")
    @classmethod
    def _http_uri(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URI, got {value!r}")
        return value

    @property
    def base_uri_is_placeholder(self) -> bool:
        """Still the shipped ``.invalid`` address: download URLs lead nowhere."""
        host = self.base_uri.split("://", 1)[1].split("/", 1)[0]
        return host.endswith(".invalid")

    def resolved_out_dir(self, data_dir: Path) -> Path:
        return self.out_dir if self.out_dir is not None else data_dir / "open_data"


class SinkSettings(BaseModel):
    """The sink runner: batch size, the backoff while a destination is down (tenacity's
    exponential wait with jitter) and the circuit breaker in front of the destination."""

    model_config = _FROZEN

    batch_size: Annotated[int, Field(gt=0, le=100_000)] = 500
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # Consecutive failed writes that open the circuit; while it is open a probe waits
    # for both the reset timeout and the next backoff time.
    breaker_fail_max: Positive = 3
    breaker_reset_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> SinkSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"DATABUS_SINK__BACKOFF_MAX_S ({self.backoff_max_s}) must not be below "
                f"DATABUS_SINK__BACKOFF_INITIAL_S ({self.backoff_initial_s})"
            )
        return self


class SuperviseSettings(BaseModel):
    """How `databus up` supervises its processes: a process that exited, or whose
    ``/readyz`` stayed not ready for ``not_ready_restart_s``, is restarted after an
    exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``; back to
    the start once it has run ``stable_after_s``)."""

    model_config = _FROZEN

    not_ready_restart_s: float = Field(default=600.0, gt=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    stable_after_s: float = Field(default=120.0, gt=0)
    # A process's log past this size is moved to <name>.log.1 (replacing the older one).
    max_log_mb: float = Field(default=50.0, gt=0)
    # Where the embedded broker keeps its records: "disk" (the data directory, through
    # the object-store stand-in, with retention enforced and kept across restarts) or
    # "memory" (Tansu's own memory: fast to start, lost when it stops, never trimmed).
    embedded_broker_storage: Literal["disk", "memory"] = "disk"
    # disk: the topics kept without a time limit (raw, std, alerts) share this budget;
    # past it their oldest batches that every reading group has committed past go.
    embedded_broker_budget_mb: float = Field(default=2048.0, gt=0)
    # disk: how often retention and the budget are enforced.
    embedded_broker_sweep_s: float = Field(default=30.0, gt=0)
    # The broker's resident memory past which `up` stops cleanly, naming the cause,
    # instead of exhausting the machine (memory storage grows with every record).
    # 0: no limit.
    embedded_broker_max_mb: float = Field(default=3072.0, ge=0)


def _loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in {"localhost", "127.0.0.1", "::1"}


_LOCAL_SYSTEM = "urn:databus:local:"


class HealthIdentifierSystems(BaseModel):
    """The FHIR ``Identifier.system`` of each kind of identifier the health axis sends
    (``DATABUS_HEALTH_AXIS__SYSTEMS__<KIND>``).

    The defaults are the bus's own placeholders, all under ``urn:databus:local:`` so no
    one mistakes them for official names: fine against the embedded receiver, refused in
    production (see :attr:`HealthAxisSettings.production`), where every one must be the
    URI the Ministry of Health gives for it, so its server can match a patient or a
    facility across senders. Vietnam has no published, normative NamingSystem yet; the
    MoH's draft VN Core IG (hl7vn/vn-core-ig, continuous build, "draft") names
    ``http://fhir.ehealth.gov.vn/core/sid/provider-medical-license-number`` for the
    facility code (ma co so KCB) and ``.../sid/insurance_number`` for the BHYT number;
    confirm them with the ministry before use. None is known for the others.
    """

    model_config = _FROZEN

    facility: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:facility-code",
        description="facility code (ma co so kham chua benh) issued by the MoH",
    )
    facility_licence: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:facility-licence",
        description="operating licence number (giay phep hoat dong) of a facility",
    )
    encounter: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:encounter",
        description="encounter number (ma luot kham) as the facility's HIS assigns it",
    )
    disease_case: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:disease-case",
        description="notifiable disease case id of the surveillance system",
    )
    patient_pseudonym: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:patient-pseudonym",
        description="keyed pseudonym of the citizen id (CCCD); the CCCD itself is never sent",
    )
    case_subject_pseudonym: str = Field(
        default=f"{_LOCAL_SYSTEM}fhir:id:case-subject-pseudonym",
        description="pseudonym of a case subject without a citizen id (one per case)",
    )

    @field_validator("*")
    @classmethod
    def _uri(cls, value: str) -> str:
        value = value.strip()
        if ":" not in value or " " in value:
            raise ValueError(f"expected an absolute URI (http://..., urn:...), got {value!r}")
        return value

    def as_dict(self) -> dict[str, str]:
        return {name: str(getattr(self, name)) for name in type(self).model_fields}

    def local(self) -> list[str]:
        """The kinds still on a ``urn:databus:local:`` placeholder."""
        return [k for k, v in self.as_dict().items() if v.startswith(_LOCAL_SYSTEM)]


class HealthAxisSettings(BaseModel):
    """The ministry's health axis (``sinks.health_axis``): FHIR endpoint, OAuth2 client
    credentials, TLS, limits. No ``url`` means no health axis is configured."""

    model_config = _FROZEN

    url: str | None = Field(default=None, description="FHIR base URL taking transaction Bundles")
    token_url: str | None = Field(default=None, description="OAuth2 token endpoint; <url>/token")
    client_id: str = Field(default="databus", min_length=1)
    client_secret: SecretStr | None = None
    ca_bundle: Path | None = Field(default=None, description="PEM CA bundle; empty: system CAs")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="per request")
    rate_per_s: float = Field(default=20.0, gt=0, le=10_000, description="requests per second")
    # An event takes up to three entries (its resource, a Patient, an Organization).
    bundle_max_entries: Annotated[int, Field(ge=3, le=10_000)] = 100
    pseudonym_key: PseudonymKey | None = Field(
        default=None, description="HMAC key of patient pseudonyms; at least 16 characters"
    )
    systems: HealthIdentifierSystems = HealthIdentifierSystems()
    # Production: the identifier systems must be the ministry's. Unset: production
    # unless the URL is on loopback (the embedded receiver `databus up` starts).
    production: bool | None = None

    @field_validator("url", "token_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s):// URL, got {value!r}")
        # Decree 85/2016 level 3: encryption in transit; plain HTTP only on loopback.
        if value.startswith("http://") and not _loopback(value):
            raise ValueError(f"plain http:// is only allowed on loopback, got {value!r}")
        return value.rstrip("/")

    @field_validator("ca_bundle", mode="before")
    @classmethod
    def _empty_ca(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA bundle {str(value)!r} is not a readable file")
        return value

    @model_validator(mode="after")
    def _complete(self) -> HealthAxisSettings:
        if self.url is not None:
            missing = [
                f"DATABUS_HEALTH_AXIS__{name.upper()}"
                for name in ("client_secret", "pseudonym_key")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(
                    f"DATABUS_HEALTH_AXIS__URL is set, so {' and '.join(missing)} must be too"
                )
        if self.url is not None and self.is_production():
            local = [
                f"DATABUS_HEALTH_AXIS__SYSTEMS__{kind.upper()}" for kind in self.systems.local()
            ]
            if local:
                raise ValueError(
                    f"the health axis is in production (DATABUS_HEALTH_AXIS__PRODUCTION, or "
                    f"a URL off loopback), so {', '.join(local)} must be set to the Ministry "
                    "of Health's identifier system URIs (not urn:databus:local: placeholders)"
                )
        return self

    def is_production(self) -> bool:
        """Production unless said otherwise or the URL is the loopback receiver."""
        if self.production is not None:
            return self.production
        return self.url is not None and not _loopback(self.url)

    def resolved_token_url(self) -> str:
        if self.token_url is not None:
            return self.token_url
        if self.url is None:
            raise ConfigError("DATABUS_HEALTH_AXIS__URL is not set")
        return self.url + "/token"


class AccessSettings(BaseModel):
    """Downstream agencies (``schemas.access_policy``): the policy file, the audit log, the
    pseudonym key of shared join keys and the subscription API's address."""

    model_config = _FROZEN

    policy_file: Path | None = Field(
        default=None, description="access policy TOML; empty: the packaged sample"
    )
    audit_log: Path | None = Field(default=None, description="empty: <data_dir>/audit.jsonl")
    pseudonym_key: PseudonymKey | None = Field(
        default=None, description="HMAC key of shared join keys; at least 16 characters"
    )
    share_group: str = Field(default="databus-share", min_length=1)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8088, ge=0, le=65535, description="0 picks a free port")
    # Abuse limits of the subscription API (sinks/subscription_api.py): requests per
    # window from one peer address and with one agency's token; over them, 429.
    api_rate_per_address: Positive = 600
    api_rate_per_token: Positive = 300
    api_rate_window_s: float = Field(default=60.0, gt=0, le=86400)
    # Repeated refusals (401, 429, ...) of one address or agency: the first is audited at
    # once, the rest as one line with their count per interval.
    api_refusal_audit_interval_s: float = Field(default=60.0, gt=0, le=86400)
    # How often the API looks at the policy file for changes (new, revoked tokens).
    policy_check_s: float = Field(default=2.0, ge=0, le=3600)
    # Lifetime of a token `databus agency-token` issues.
    token_ttl_days: Positive = 90
    # The audit log rotates at this size, keeping this many rotated files.
    audit_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    audit_keep_files: Positive = 10

    @field_validator("policy_file", "audit_log", mode="before")
    @classmethod
    def _empty_path(cls, value: object) -> object:
        return None if value == "" else value

    def resolved_audit_log(self, data_dir: Path) -> Path:
        return self.audit_log if self.audit_log is not None else data_dir / "audit.jsonl"


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
    log: LogSettings = LogSettings()
    alerts: AlertSettings = AlertSettings()
    spool: SpoolSettings = SpoolSettings()
    outbox: OutboxSettings = OutboxSettings()
    shared_repo: SharedRepoSettings = SharedRepoSettings()
    open_data: OpenDataSettings = OpenDataSettings()
    health_axis: HealthAxisSettings = HealthAxisSettings()
    data_dir: Path = Field(default=Path(".databus"), description="embedded servers' files")
    processor_group: str = "databus-processor"
    # Most records the processor's batched loop takes per poll (it never waits for a
    # batch to fill); also the most records whose state is written together.
    processor_batch_size: Positive = 500
    # How long the loop gathers the state changes of small batches (entity changelog,
    # rule deltas, unit stats) before writing them together: bounds the rate of
    # aggregates reaching the alert and quality stages; alerts lag by up to this much.
    processor_state_every_ms: Positive = 500
    # Restoring the entity state on assignment fails only when the changelogs yield no
    # record for this long (no total timeout: a big state takes as long as it takes).
    processor_restore_stall_s: Positive = 60
    # How many recently accepted event ids the processor remembers (per worker) to
    # dead-letter an id reused by another entity (event_id_reused); ~0.3 KB each.
    processor_event_id_window: Annotated[int, Field(ge=1, le=10_000_000)] = 50_000
    # DATABUS_PROCESSOR__STATE_DIR, __ENTITY_STORE, __CACHE_ENTRIES, __TABLE_STORE, ...
    processor: ProcessorStateSettings = ProcessorStateSettings()
    sink_group: str = "databus-sink-ioc"
    sink: SinkSettings = SinkSettings()
    access: AccessSettings = AccessSettings()
    supervise: SuperviseSettings = SuperviseSettings()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; a bad value stops with its variable name."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            var = "DATABUS_" + "__".join(str(p).upper() for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            # a check across variables names each one itself
            problems.append(message if message.startswith(var) else f"{var}: {err['msg']}")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from exc
    except SettingsError as exc:
        # e.g. DATABUS_KAFKA='{not json': pydantic-settings names only the field.
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "?"
        raise ConfigError(f"invalid settings:\n  DATABUS_{field.upper()}: {exc}") from exc
