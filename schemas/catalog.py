"""The dataset catalog: which topics, key, schemas and personal fields a dataset has.

Every dataset is one ``[[dataset]]`` table in ``schemas/catalog.toml`` (the format is
documented at the top of that file). ``load_catalog`` reads a catalog file and checks
its *shape* (required keys, types, unknown keys), raising ``ConfigError`` naming the
file, the dataset and the field. What the values *mean* — schemas parse, key fields
exist, names follow the conventions — is checked by ``schemas.catalog_check``.

Topic names follow docs/architecture.md: ``<domain>.<dataset>.<stage>.v<major>``; subjects use
TopicNameStrategy (``<topic>-value``).

Keys: ``key_fields`` lists the key field(s) of the record inside the envelope.
``key_field`` is the first of them (a single-key dataset's key); for a composite key,
``key_of(record)`` joins the values of every key field with ``|``, and that is the
Kafka key to use.

Schema history: the file a dataset names (``<domain>/<name>.avsc``) is always the current
revision. Earlier revisions of it stay in ``<domain>/history/<name>.<rev>.avsc``, with
``rev`` = 1, 2, … in the order they were released; the current file is the revision after
the last of them. ``schema_revisions`` lists them in order, oldest first.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import BaseModel

from bus.errors import ConfigError

__all__ = [
    "ALERTS_SCHEMA",
    "ALERTS_TOPIC",
    "CATALOG_FILE",
    "CLASSIFICATIONS",
    "DATASETS",
    "DEFAULT_EARLIEST",
    "DOSSIERS",
    "QUALITY_SCHEMA",
    "QUALITY_TOPIC",
    "STAGES",
    "Dataset",
    "StateRetention",
    "UpdateObligation",
    "avro_root",
    "get_dataset",
    "load_catalog",
    "load_schema",
    "read_catalog",
    "read_schema",
    "resolve_model",
    "schema_revisions",
    "value_subject",
]

ALERTS_TOPIC = "alerts.v1"
ALERTS_SCHEMA = "alerts/alerts.v1.avsc"
QUALITY_TOPIC = "quality.v1"
QUALITY_SCHEMA = "quality/quality.v1.avsc"

STAGES = ("raw", "std", "shared", "dlq")
CLASSIFICATIONS = ("public", "internal", "restricted")
KEY_SEPARATOR = "|"

Classification = Literal["public", "internal", "restricted"]

# The earliest plausible date of a dataset's records when its catalog entry names none:
# a time before it is a "zero date" of some system (Excel's 1899-12-30, SQL Server's
# 1900-01-01, the Unix epoch) or a typing error, not a record of the e-government era.
DEFAULT_EARLIEST = date(2000, 1, 1)


def avro_root() -> Traversable:
    """The packaged ``schemas/avro`` folder."""
    return resources.files("schemas").joinpath("avro")


CATALOG_FILE: Traversable = resources.files("schemas").joinpath("catalog.toml")


@cache
def load_schema(path: str) -> str:
    """The text of a schema file under ``schemas/avro`` (parsed once, to fail early)."""
    text = avro_root().joinpath(path).read_text(encoding="utf-8")
    json.loads(text)
    return text


def read_schema(path: str, root: Path | Traversable | None = None) -> str:
    """The text of a schema under ``root`` (default: the packaged ``schemas/avro``)."""
    if root is None:
        return load_schema(path)
    return root.joinpath(path).read_text(encoding="utf-8")


_REVISION = re.compile(r"^(?P<stem>.+)\.(?P<rev>[1-9][0-9]*)\.avsc$")


def schema_revisions(path: str, root: Path | Traversable | None = None) -> list[str]:
    """Every revision of the schema at ``path``, oldest first, the current one last.

    Earlier revisions are ``<dir>/history/<stem>.<rev>.avsc``; an unnumbered or
    malformed file in ``history/`` is ignored.
    """
    base = avro_root() if root is None else root
    folder, _, filename = path.rpartition("/")
    stem = filename.removesuffix(".avsc")
    history = base.joinpath(folder, "history") if folder else base.joinpath("history")
    found: list[tuple[int, str]] = []
    if history.is_dir():
        for entry in history.iterdir():
            match = _REVISION.match(entry.name)
            if match and match["stem"] == stem:
                prefix = f"{folder}/history" if folder else "history"
                found.append((int(match["rev"]), f"{prefix}/{entry.name}"))
    return [p for _, p in sorted(found)] + [path]


def value_subject(topic: str) -> str:
    return f"{topic}-value"


@cache
def resolve_model(ref: str) -> type[BaseModel]:
    """The pydantic model named ``module:Class``."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {ref!r} must be written as 'module:Class'")
    try:
        module = importlib.import_module(module_name)
        found = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"model {ref!r} cannot be imported: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, BaseModel)):
        raise ConfigError(f"model {ref!r} is not a pydantic BaseModel")
    return found


@dataclass(frozen=True)
class UpdateObligation:
    """How fresh a unit must keep a dataset.

    ``realtime``: every change on the bus within ``within_minutes`` of happening.
    ``daily``: the day's data delivered by ``by_local_time`` ("HH:MM", Asia/Ho_Chi_Minh).
    """

    kind: Literal["realtime", "daily"]
    within_minutes: int | None = None
    by_local_time: str | None = None

    def describe(self) -> str:
        if self.kind == "realtime":
            return f"real time, within {self.within_minutes} min"
        return f"daily by {self.by_local_time} (Asia/Ho_Chi_Minh)"


@dataclass(frozen=True)
class StateRetention:
    """How long the processor keeps the state of an entity that reached a final state
    (``field`` of the record image in ``final``, or deleted), for dedup and ordering.
    After that the entity is forgotten: a change of it arriving later is processed as
    a new entity, and — its source time being older than the retention — as history
    that moves no alert rule (docs/operations.md, "Entity state retention")."""

    field: str
    final: frozenset[str]
    days: int

    @property
    def ms(self) -> int:
        return self.days * 86_400_000

    def is_final(self, op: object, image: Mapping[str, Any] | None) -> bool:
        if op == "d":
            return True
        return image is not None and str(image.get(self.field)) in self.final


@dataclass(frozen=True)
class Dataset:
    id: str
    sector: str
    owner_unit: str
    source_system: str
    description_en: str
    description_vi: str
    key_fields: tuple[str, ...]
    personal_fields: tuple[str, ...]
    raw_schema: str
    std_schema: str | None
    model_ref: str
    classification: Classification
    update: UpdateObligation
    major: int = 1
    # Times of a record (and of its change event) before this local date
    # (Asia/Ho_Chi_Minh) are implausible: dead-lettered as timestamp_before_earliest.
    earliest: date = DEFAULT_EARLIEST
    # Entities in a final state are forgotten by the processor this long after; None:
    # kept for as long as the dataset exists.
    state_retention: StateRetention | None = None

    @property
    def model(self) -> type[BaseModel]:
        """The pydantic model of the record inside the envelope (imported on first use)."""
        return resolve_model(self.model_ref)

    @property
    def key_field(self) -> str:
        """The first key field: the whole key unless the key is composite (see ``key_of``)."""
        return self.key_fields[0]

    def key_of(self, record: Mapping[str, Any]) -> str:
        """The Kafka key of a record: its key field values joined with ``|``."""
        return KEY_SEPARATOR.join(str(record[f]) for f in self.key_fields)

    @property
    def std_value_schema(self) -> str:
        """The schema the std topic carries: the std schema, or the raw one until defined."""
        return self.std_schema if self.std_schema is not None else self.raw_schema

    def topic(self, stage: str) -> str:
        return f"{self.id}.{stage}.v{self.major}"

    @property
    def raw_topic(self) -> str:
        return self.topic("raw")

    @property
    def std_topic(self) -> str:
        return self.topic("std")

    @property
    def shared_topic(self) -> str:
        return self.topic("shared")

    @property
    def dlq_topic(self) -> str:
        return self.topic("dlq")


# ---- reading a catalog file: shape only ---------------------------------------

_REQUIRED_STR = (
    "id",
    "sector",
    "owner_unit",
    "source_system",
    "description_vi",
    "description_en",
    "schema",
    "model",
    "classification",
)
_KNOWN = {
    *_REQUIRED_STR,
    "std_schema",
    "key",
    "personal_fields",
    "major",
    "update",
    "earliest",
    "state_retention",
}


class _Entry:
    def __init__(self, source: str, index: int, table: Mapping[str, Any]) -> None:
        self.source = source
        self.table = table
        raw_id = table.get("id")
        self.label = raw_id if isinstance(raw_id, str) else f"#{index + 1}"

    def fail(self, field: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: dataset {self.label}: field {field!r}: {message}")

    def string(self, field: str, *, required: bool = True) -> str | None:
        value = self.table.get(field)
        if value is None:
            if required:
                raise self.fail(field, "is required")
            return None
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, got {type(value).__name__}")
        return value

    def strings(self, field: str) -> tuple[str, ...]:
        value = self.table.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(field, "must be a list of strings")
        return tuple(value)

    def update(self) -> UpdateObligation:
        value = self.table.get("update")
        if not isinstance(value, dict):
            raise self.fail("update", "is required, as { kind = ..., ... }")
        unknown = set(value) - {"kind", "within_minutes", "by_local_time"}
        if unknown:
            raise self.fail("update", f"unknown keys {sorted(unknown)}")
        kind = value.get("kind")
        minutes = value.get("within_minutes")
        by = value.get("by_local_time")
        if not isinstance(kind, str):
            raise self.fail("update.kind", "is required, a string")
        if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool)):
            raise self.fail("update.within_minutes", "must be an integer")
        if by is not None and not isinstance(by, str):
            raise self.fail("update.by_local_time", 'must be a string "HH:MM"')
        # The value of kind is checked by catalog_check, which reports every problem at once.
        return UpdateObligation(cast(Any, kind), minutes, by)

    def state_retention(self) -> StateRetention | None:
        value = self.table.get("state_retention")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail("state_retention", "must be { field = ..., final = [...], days = N }")
        unknown = set(value) - {"field", "final", "days"}
        if unknown:
            raise self.fail("state_retention", f"unknown keys {sorted(unknown)}")
        field, final, days = value.get("field"), value.get("final"), value.get("days")
        if not isinstance(field, str) or not field:
            raise self.fail("state_retention.field", "is required, a field name")
        if not isinstance(final, list) or not final or not all(isinstance(v, str) for v in final):
            raise self.fail("state_retention.final", "is required, a non-empty list of values")
        if not isinstance(days, int) or isinstance(days, bool) or days < 1:
            raise self.fail("state_retention.days", "must be a whole number of days, at least 1")
        return StateRetention(field, frozenset(final), days)

    def dataset(self) -> Dataset:
        unknown = set(self.table) - _KNOWN
        if unknown:
            raise self.fail(sorted(unknown)[0], "unknown field")
        values = {name: self.string(name) for name in _REQUIRED_STR}
        major = self.table.get("major", 1)
        if not isinstance(major, int) or isinstance(major, bool):
            raise self.fail("major", "must be an integer")
        earliest = self.table.get("earliest", DEFAULT_EARLIEST)
        if not isinstance(earliest, date) or isinstance(earliest, datetime):
            raise self.fail("earliest", "must be a TOML local date, e.g. 2000-01-01 (unquoted)")
        key = self.strings("key")
        if not key:
            raise self.fail("key", "is required, a non-empty list of field names")
        return Dataset(
            id=cast(str, values["id"]),
            sector=cast(str, values["sector"]),
            owner_unit=cast(str, values["owner_unit"]),
            source_system=cast(str, values["source_system"]),
            description_en=cast(str, values["description_en"]),
            description_vi=cast(str, values["description_vi"]),
            key_fields=key,
            personal_fields=self.strings("personal_fields"),
            raw_schema=cast(str, values["schema"]),
            std_schema=self.string("std_schema", required=False),
            model_ref=cast(str, values["model"]),
            classification=cast(Classification, values["classification"]),
            update=self.update(),
            major=major,
            earliest=earliest,
            state_retention=self.state_retention(),
        )


def read_catalog(path: Path | Traversable | None = None) -> list[Dataset]:
    """Every dataset of a catalog file in file order, duplicates included (for checking)."""
    source = CATALOG_FILE if path is None else path
    name = str(source)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the catalog: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc
    unknown = set(document) - {"dataset"}
    if unknown:
        raise ConfigError(f"{name}: unknown top-level keys {sorted(unknown)}")
    tables = document.get("dataset", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{name}: 'dataset' must be an array of tables ([[dataset]])")
    return [_Entry(name, i, table).dataset() for i, table in enumerate(tables)]


def load_catalog(path: Path | Traversable | None = None) -> dict[str, Dataset]:
    """The datasets of a catalog file by id (default: the packaged ``catalog.toml``)."""
    datasets: dict[str, Dataset] = {}
    for dataset in read_catalog(path):
        if dataset.id in datasets:
            name = str(CATALOG_FILE if path is None else path)
            raise ConfigError(f"{name}: dataset {dataset.id}: field 'id': appears twice")
        datasets[dataset.id] = dataset
    return datasets


DATASETS: dict[str, Dataset] = load_catalog()
DOSSIERS = DATASETS["publicservice.dossiers"]


def get_dataset(dataset_id: str) -> Dataset:
    try:
        return DATASETS[dataset_id]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {dataset_id!r}; the catalog has: {known}") from None
