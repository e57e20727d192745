"""What a catalog means, checked: the rules behind ``databus catalog validate``.

``schemas.catalog`` checks a catalog file's shape; this module checks its content, with
no I/O beyond reading the schema files, and returns every problem at once rather than
stopping at the first:

- ids are ``<domain>.<dataset>`` and unique; every topic is ``<id>.<stage>.v<major>``,
  lowercase, ``[a-z0-9_]`` in each part;
- descriptions exist in Vietnamese and English; classification and update are valid;
- the raw schema (and the std schema, when there is one) parses and is the bus's
  Debezium-style envelope; every key and personal field is a field of the record in
  ``before``/``after``;
- the model imports and is a pydantic model;
- the schema history evolves BACKWARD_TRANSITIVE (``schemas.evolution``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import fastavro

from bus.errors import ConfigError
from schemas.catalog import CLASSIFICATIONS, STAGES, Dataset, read_schema, resolve_model
from schemas.evolution import check_evolution

__all__ = ["Problem", "envelope_record", "validate_catalog"]

_PART = r"[a-z0-9_]+"
_ID = re.compile(rf"^{_PART}\.{_PART}$")
_TOPIC = re.compile(rf"^{_PART}\.{_PART}\.({'|'.join(STAGES)})\.v[1-9][0-9]*$")
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
_ENVELOPE_FIELDS = ("event_id", "op", "ts_ms", "source", "before", "after")
_SOURCE_FIELDS = ("system", "unit", "dataset", "ts_ms", "version")


@dataclass(frozen=True)
class Problem:
    dataset_id: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.dataset_id}: {self.field}: {self.message}"


def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {f["name"]: f["type"] for f in record.get("fields", []) if isinstance(f, dict)}


def _non_null(union: Any) -> list[Any]:
    if not isinstance(union, list):
        return []
    return [b for b in union if b != "null"]


def envelope_record(document: Any) -> dict[str, Any]:
    """The record inside ``before``/``after`` of an envelope schema; ValueError if not one."""
    if not isinstance(document, dict) or document.get("type") != "record":
        raise ValueError("is not a record schema")
    fields = _fields(document)
    missing = [n for n in _ENVELOPE_FIELDS if n not in fields]
    if missing:
        raise ValueError(f"is not an envelope: no field(s) {', '.join(missing)}")
    source = fields["source"]
    if not isinstance(source, dict) or source.get("type") != "record":
        raise ValueError("is not an envelope: 'source' is not a record")
    lacking = [n for n in _SOURCE_FIELDS if n not in _fields(source)]
    if lacking:
        raise ValueError(f"is not an envelope: 'source' has no {', '.join(lacking)}")
    before = _non_null(fields["before"])
    if not (
        isinstance(fields["before"], list)
        and "null" in fields["before"]
        and len(before) == 1
        and isinstance(before[0], dict)
        and before[0].get("type") == "record"
    ):
        raise ValueError("is not an envelope: 'before' must be [null, <record>]")
    record: dict[str, Any] = before[0]
    names = {record.get("name")}
    if namespace := record.get("namespace", document.get("namespace")):
        names.add(f"{namespace}.{record.get('name')}")
    after = _non_null(fields["after"])
    if not (
        isinstance(fields["after"], list)
        and "null" in fields["after"]
        and len(after) == 1
        and (after[0] == record or (isinstance(after[0], str) and after[0] in names))
    ):
        raise ValueError("is not an envelope: 'after' must be [null, <the record of 'before'>]")
    return record


def _schema_problems(
    dataset: Dataset, field: str, path: str, root: Path | Traversable | None
) -> tuple[list[Problem], dict[str, Any] | None]:
    def problem(message: str) -> Problem:
        return Problem(dataset.id, field, f"{path}: {message}")

    try:
        document = json.loads(read_schema(path, root))
    except (OSError, ValueError) as exc:
        return [problem(f"cannot be read: {exc}")], None
    try:
        fastavro.parse_schema(document, _write_hint=False)
    except Exception as exc:  # fastavro raises several unrelated types
        return [problem(f"does not parse: {exc}")], None
    try:
        return [], envelope_record(document)
    except ValueError as exc:
        return [problem(str(exc))], None


def _dataset_problems(dataset: Dataset, root: Path | Traversable | None) -> list[Problem]:
    problems: list[Problem] = []

    def add(field: str, message: str) -> None:
        problems.append(Problem(dataset.id, field, message))

    if not _ID.match(dataset.id):
        # Every topic name derives from the id: one problem, not five.
        add("id", "must be <domain>.<dataset>, lowercase, [a-z0-9_] in each part")
    else:
        for stage in STAGES:
            if not _TOPIC.match(topic := dataset.topic(stage)):
                add("topic", f"{topic!r} does not follow <domain>.<dataset>.<stage>.v<major>")
    if dataset.major < 1:
        add("major", "must be 1 or more")
    for name in ("sector", "owner_unit", "source_system"):
        if not getattr(dataset, name).strip():
            add(name, "is empty")
    if not dataset.description_vi.strip():
        add("description_vi", "the Vietnamese description is empty")
    if not dataset.description_en.strip():
        add("description_en", "the English description is empty")
    if dataset.classification not in CLASSIFICATIONS:
        add(
            "classification",
            f"{dataset.classification!r} is not one of {', '.join(CLASSIFICATIONS)}",
        )
    problems += _update_problems(dataset)

    raw_problems, record = _schema_problems(dataset, "schema", dataset.raw_schema, root)
    problems += raw_problems
    std_problems: list[Problem] = []
    if dataset.std_schema is not None:
        std_problems = _schema_problems(dataset, "std_schema", dataset.std_schema, root)[0]
    problems += std_problems
    if record is not None:
        names = set(_fields(record))
        for name in dataset.key_fields:
            if name not in names:
                add("key", f"{name!r} is not a field of {record.get('name')}")
        for name in dataset.personal_fields:
            if name not in names:
                add("personal_fields", f"{name!r} is not a field of {record.get('name')}")
    for name, count in Counter(dataset.key_fields).items():
        if count > 1:
            add("key", f"{name!r} is listed twice")
    for name, count in Counter(dataset.personal_fields).items():
        if count > 1:
            add("personal_fields", f"{name!r} is listed twice")
    try:
        resolve_model(dataset.model_ref)
    except ConfigError as exc:
        add("model", str(exc))
    if not raw_problems and not std_problems:
        problems += [Problem(dataset.id, "schema", m) for m in check_evolution(dataset, root=root)]
    return problems


def _update_problems(dataset: Dataset) -> list[Problem]:
    update = dataset.update
    out: list[str] = []
    if update.kind == "realtime":
        minutes = update.within_minutes
        if minutes is None or minutes < 1:
            out.append("a realtime obligation needs within_minutes ≥ 1")
        if update.by_local_time is not None:
            out.append("a realtime obligation takes no by_local_time")
    elif update.kind == "daily":
        if update.by_local_time is None or not _HHMM.match(update.by_local_time):
            out.append('a daily obligation needs by_local_time as "HH:MM" (00:00–23:59)')
        if update.within_minutes is not None:
            out.append("a daily obligation takes no within_minutes")
    else:
        out.append(f"kind {update.kind!r} is not 'realtime' or 'daily'")
    return [Problem(dataset.id, "update", m) for m in out]


def validate_catalog(
    datasets: Iterable[Dataset] | Mapping[str, Dataset],
    *,
    root: Path | Traversable | None = None,
) -> list[Problem]:
    """Every problem of a catalog; empty when it is valid.

    ``datasets`` is what ``read_catalog`` returns (a list, so duplicate ids show) or a
    ``{id: Dataset}`` mapping; ``root`` is the folder schema paths are relative to
    (default: the packaged ``schemas/avro``).
    """
    problems: list[Problem] = []
    if isinstance(datasets, Mapping):
        for key, dataset in datasets.items():
            if key != dataset.id:
                problems.append(Problem(dataset.id, "id", f"catalogued under {key!r}"))
        items = list(datasets.values())
    else:
        items = list(datasets)
    for name, count in Counter(d.id for d in items).items():
        if count > 1:
            problems.append(Problem(name, "id", f"appears {count} times"))
    for dataset in items:
        problems += _dataset_problems(dataset, root)
    return problems
