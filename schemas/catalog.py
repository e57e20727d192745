"""The dataset catalog: which topics, key, schemas and personal fields a dataset has.

Topic names follow DESIGN.md: ``<domain>.<dataset>.<stage>.v<major>``; subjects use
TopicNameStrategy (``<topic>-value``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pydantic import BaseModel

from bus.errors import ConfigError
from schemas.models import Dossier

__all__ = [
    "ALERTS_SCHEMA",
    "ALERTS_TOPIC",
    "DATASETS",
    "DOSSIERS",
    "Dataset",
    "get_dataset",
    "load_schema",
    "value_subject",
]

ALERTS_TOPIC = "alerts.v1"
ALERTS_SCHEMA = "alerts/alerts.v1.avsc"


@cache
def load_schema(path: str) -> str:
    """The text of a schema file under ``schemas/avro`` (parsed once, to fail early)."""
    text = resources.files("schemas").joinpath("avro", path).read_text(encoding="utf-8")
    json.loads(text)
    return text


def value_subject(topic: str) -> str:
    return f"{topic}-value"


@dataclass(frozen=True)
class Dataset:
    id: str
    sector: str
    owner_unit: str
    source_system: str
    description_en: str
    description_vi: str
    key_field: str
    personal_fields: tuple[str, ...]
    raw_schema: str
    std_schema: str
    model: type[BaseModel]
    major: int = 1

    def topic(self, stage: str) -> str:
        return f"{self.id}.{stage}.v{self.major}"

    @property
    def raw_topic(self) -> str:
        return self.topic("raw")

    @property
    def std_topic(self) -> str:
        return self.topic("std")

    @property
    def dlq_topic(self) -> str:
        return self.topic("dlq")


DOSSIERS = Dataset(
    id="publicservice.dossiers",
    sector="public service",
    owner_unit="DNA.VPUB",
    source_system="dvc-portal",
    description_en="Administrative-procedure dossiers from the public-service portal",
    description_vi="Hồ sơ thủ tục hành chính từ Cổng dịch vụ công",
    key_field="dossier_id",
    personal_fields=(
        "applicant_citizen_id",
        "applicant_name",
        "applicant_birth_date",
        "applicant_sex",
    ),
    raw_schema="publicservice/dossiers.raw.v1.avsc",
    std_schema="publicservice/dossiers.std.v1.avsc",
    model=Dossier,
)

DATASETS: dict[str, Dataset] = {DOSSIERS.id: DOSSIERS}


def get_dataset(dataset_id: str) -> Dataset:
    try:
        return DATASETS[dataset_id]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {dataset_id!r}; the catalog has: {known}") from None
