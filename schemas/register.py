"""Register the catalog's schemas with any Confluent-compatible registry.

For each dataset, under TopicNameStrategy subjects:

- ``<raw_topic>-value``: the raw schema's history revisions in order, then the current one;
- ``<std_topic>-value``: the same for the std schema, or for the raw schema when the
  dataset has no std schema yet (the std topic then carries raw events);
- and once, ``alerts.v1-value``: the alerts schema.

Idempotent: a subject's revisions up to the newest one the registry already holds are
skipped (registering an older revision after a newer one would make it the latest), so
running it twice registers nothing new and returns the same ids. The registry applies
its compatibility level (BACKWARD_TRANSITIVE on the bus); a refusal raises
``IncompatibleSchemaError`` naming the subject and the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib.resources.abc import Traversable
from pathlib import Path

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.errors import IncompatibleSchemaError, RegistryError
from schemas.catalog import (
    ALERTS_SCHEMA,
    ALERTS_TOPIC,
    Dataset,
    read_schema,
    schema_revisions,
    value_subject,
)

__all__ = ["Registered", "catalog_subjects", "register_catalog"]

Registered = tuple[str, int, int]
"""(subject, version, schema id)"""

Progress = Callable[[str, str, int, int], None]
"""Called with (subject, schema path, version, schema id) after each schema."""


def catalog_subjects(
    datasets: Iterable[Dataset] | Mapping[str, Dataset],
) -> list[tuple[str, str]]:
    """(subject, current schema path) for every subject the catalog implies, in order."""
    items = datasets.values() if isinstance(datasets, Mapping) else datasets
    subjects: list[tuple[str, str]] = []
    for dataset in items:
        subjects.append((value_subject(dataset.raw_topic), dataset.raw_schema))
        subjects.append((value_subject(dataset.std_topic), dataset.std_value_schema))
    subjects.append((value_subject(ALERTS_TOPIC), ALERTS_SCHEMA))
    return subjects


def _refusal(exc: Exception, subject: str, path: str) -> RegistryError:
    if isinstance(exc, SchemaRegistryError):
        if exc.http_status_code == 409:
            return IncompatibleSchemaError(
                f"{subject}: {path} is incompatible with the registered versions: "
                f"{exc.error_message}"
            )
        return RegistryError(
            f"{subject}: the registry refused {path}: {exc.error_message}",
            retriable=exc.http_status_code >= 500,
        )
    return RegistryError(f"{subject}: registry unreachable while registering {path}: {exc}")


def _registered(client: SchemaRegistryClient, subject: str, schema: Schema) -> Registered | None:
    try:
        found = client.lookup_schema(subject, schema)
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return None
        raise
    if found.version is None or found.schema_id is None:
        return None
    return subject, found.version, found.schema_id


def _register_subject(
    client: SchemaRegistryClient,
    subject: str,
    paths: list[str],
    root: Path | Traversable | None,
    on_progress: Progress | None,
) -> list[Registered]:
    schemas = [(path, Schema(read_schema(path, root), "AVRO")) for path in paths]
    known: list[Registered | None] = []
    for path, schema in schemas:
        try:
            known.append(_registered(client, subject, schema))
        except Exception as exc:
            raise _refusal(exc, subject, path) from exc
    # Resume after the newest revision the registry already has.
    start = max((i + 1 for i, k in enumerate(known) if k is not None), default=0)
    out: list[Registered] = []
    for (path, _), found in zip(schemas[:start], known[:start], strict=True):
        if found is not None:
            out.append(found)
            if on_progress is not None:
                on_progress(subject, path, found[1], found[2])
    for path, schema in schemas[start:]:
        try:
            client.register_schema(subject, schema)
            new = _registered(client, subject, schema)
        except Exception as exc:
            raise _refusal(exc, subject, path) from exc
        if new is None:
            raise RegistryError(f"{subject}: {path} was registered but cannot be found")
        out.append(new)
        if on_progress is not None:
            on_progress(subject, path, new[1], new[2])
    return out


def register_catalog(
    client: SchemaRegistryClient,
    datasets: Iterable[Dataset] | Mapping[str, Dataset],
    *,
    root: Path | Traversable | None = None,
    on_progress: Progress | None = None,
) -> list[Registered]:
    """Register every schema of the catalog; returns (subject, version, id) for every
    revision the registry holds once done (the same list on a second run)."""
    results: list[Registered] = []
    for subject, path in catalog_subjects(datasets):
        revisions = schema_revisions(path, root)
        results += _register_subject(client, subject, revisions, root, on_progress)
    return results
