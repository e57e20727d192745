"""The schema registry's state, with no I/O: subjects, versions, ids, compatibility.

Every change goes through the same two steps, live and on replay:
``plan_*`` checks a request against the current state and returns a ``Change``
(the ``_schemas`` record to write) without mutating anything; once the record is
acknowledged, ``apply`` folds it in. Replaying the topic calls ``apply`` on each
record in order, so a restarted registry rebuilds exactly the same ids.

Records follow Confluent's ``_schemas`` layout (JSON keys with a ``keytype``):
``SCHEMA`` (a subject version; a null value removes it for good), ``CONFIG`` (a
compatibility level; a null value removes it), ``DELETE_SUBJECT`` (soft delete of
every version up to ``version``) and ``CLEAR_SUBJECT`` (drops the soft-deleted
versions of a subject). Other key types are ignored, as Confluent ignores ``NOOP``.

Compatibility decisions come from the ``avro`` package's reader/writer checker;
this module only chooses which pairs to check and words the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from bus.errors import IncompatibleSchemaError, RegistryRequestError

__all__ = [
    "AVRO",
    "DEFAULT_LEVEL",
    "Change",
    "CompatibilityLevel",
    "CompatibilityResult",
    "Registration",
    "RegistryRequestError",
    "RegistryState",
    "SchemaVersion",
    "parse_version",
]

AVRO = "AVRO"
_MAX_VERSION = 2**31 - 1

Latest = Literal["latest"]


def _subject_not_found(subject: str) -> RegistryRequestError:
    return RegistryRequestError(40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: int | Latest) -> RegistryRequestError:
    return RegistryRequestError(40402, f"Version {version} not found for subject '{subject}'.")


class CompatibilityLevel(StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, text: object) -> CompatibilityLevel:
        if isinstance(text, str):
            try:
                return cls(text.upper())
            except ValueError:
                pass
        valid = ", ".join(level.value for level in cls)
        raise RegistryRequestError(
            42203, f"Invalid compatibility level {text!r}. Valid values are {valid}."
        )

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def backward(self) -> bool:
        """The new schema must read data written with the old ones."""
        return self.value.startswith(("BACKWARD", "FULL"))

    @property
    def forward(self) -> bool:
        """The old schemas must read data written with the new one."""
        return self.value.startswith(("FORWARD", "FULL"))


# The convention of the bus (docs/architecture.md), not Confluent's BACKWARD default.
DEFAULT_LEVEL = CompatibilityLevel.BACKWARD_TRANSITIVE


def parse_version(text: str | int) -> int | Latest:
    """A version path segment: a positive number, ``latest`` or ``-1``."""
    if isinstance(text, str) and text.lower() == "latest":
        return "latest"
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number == -1:
        return "latest"
    if not 1 <= number <= _MAX_VERSION:
        raise RegistryRequestError(
            42202,
            f"The specified version '{text}' is not a valid version id. "
            f'Allowed values are between [1, {_MAX_VERSION}] and the string "latest"',
        )
    return number


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    subject: str
    version: int
    schema_id: int
    schema: str
    schema_type: str = AVRO
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The body Confluent returns for a subject version."""
        body: dict[str, Any] = {
            "subject": self.subject,
            "version": self.version,
            "id": self.schema_id,
            "schema": self.schema,
        }
        if self.schema_type != AVRO:
            body["schemaType"] = self.schema_type
        return body


@dataclass(frozen=True, slots=True)
class Change:
    """One ``_schemas`` record: written and acknowledged first, then applied."""

    key: dict[str, Any]
    value: dict[str, Any] | None

    def key_bytes(self) -> bytes:
        return json.dumps(self.key, separators=(",", ":")).encode()

    def value_bytes(self) -> bytes | None:
        if self.value is None:
            return None
        return json.dumps(self.value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Registration:
    """``change`` is None when the schema is already the subject's; nothing to write."""

    schema_id: int
    version: int
    change: Change | None


@dataclass(frozen=True, slots=True)
class CompatibilityResult:
    is_compatible: bool
    messages: tuple[str, ...] = ()


@dataclass(slots=True)
class _Parsed:
    canonical: str
    document: Any
    schema: avro.schema.Schema


@dataclass(slots=True)
class _Subject:
    versions: dict[int, SchemaVersion] = field(default_factory=dict)

    def live(self) -> list[SchemaVersion]:
        return [v for _, v in sorted(self.versions.items()) if not v.deleted]

    def visible(self, *, deleted: bool, deleted_only: bool = False) -> list[SchemaVersion]:
        ordered = [v for _, v in sorted(self.versions.items())]
        if deleted_only:
            return [v for v in ordered if v.deleted]
        return ordered if deleted else [v for v in ordered if not v.deleted]


def _parse_schema(schema: object, schema_type: object = AVRO, references: object = None) -> _Parsed:
    if schema_type not in (None, AVRO):
        raise RegistryRequestError(
            42201, f"Schema type {schema_type!r} is not supported; this registry serves AVRO only."
        )
    if references:
        raise RegistryRequestError(42201, "Schema references are not supported by this registry.")
    if not isinstance(schema, str) or not schema.strip():
        raise RegistryRequestError(42201, "Empty schema: 'schema' must be a non-empty string.")
    try:
        document = json.loads(schema)
        parsed = avro.schema.parse(schema)
        # fastavro is what the serializers use, and it also rejects defaults of the wrong type.
        fastavro.parse_schema(document, _write_hint=False)
    except Exception as exc:
        raise RegistryRequestError(42201, f"Invalid schema: {exc}") from exc
    # Whitespace must not make a different schema (Confluent dedups the same way).
    canonical = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
    return _Parsed(canonical, document, parsed)


def _field_path(document: Any, location: str) -> str:
    """Field names along a checker location such as ``/fields/3/type/fields/1``."""
    names: list[str] = []
    node = document
    tokens = [t for t in location.split("/") if t]
    i = 0
    try:
        while i < len(tokens):
            token = tokens[i]
            if token == "fields":
                node = node["fields"][int(tokens[i + 1])]
                names.append(str(node["name"]))
                i += 2
                continue
            if token in ("type", "items", "values"):
                node = node[token]
            else:
                break
            i += 1
    except (KeyError, IndexError, TypeError, ValueError):
        pass
    return ".".join(names)


_MISSING_DEFAULT = "reader_field_missing_default_value"
_DETAILS = {
    _MISSING_DEFAULT: (
        "field '{message}' has no default value in the reader schema and is missing "
        "from the writer schema"
    ),
    "missing_enum_symbols": "writer enum symbols {message} are missing from the reader enum",
    "name_mismatch": "record name differs, {message}",
}


def _describe(result: Any, reader_document: Any, direction: str, level: CompatibilityLevel) -> str:
    # The checker keeps messages and locations in sets, so with several
    # incompatibilities they cannot be paired exactly: list both, worded as well as we can.
    kinds = list(dict.fromkeys(k.value for k in result.incompatibilities))
    where, names = [], set()
    for location in sorted(result.locations):
        path = _field_path(reader_document, location)
        where.append(f"field '{path}' at {location}" if path else f"at {location}")
        names.add(path.rsplit(".", 1)[-1])
    details = []
    for message in sorted(result.messages):
        if len(kinds) == 1:
            kind = kinds[0]
        elif _MISSING_DEFAULT in kinds and message in names:
            kind = _MISSING_DEFAULT
        else:
            kind = ""
        details.append(_DETAILS.get(kind, "{message}").format(message=message))
    return f"{', '.join(where)}: {', '.join(kinds)}: {'; '.join(details)}; {direction} ({level})"


def _check_pair(reader: _Parsed, writer: _Parsed) -> Any:
    # A fresh checker per pair: its memo is keyed by object ids and would only grow.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    return checker.get_compatibility(reader.schema, writer.schema)


class RegistryState:
    """Subjects, versions, ids and levels; mutated only by ``apply``."""

    def __init__(self, default_level: CompatibilityLevel = DEFAULT_LEVEL) -> None:
        self._default_level = default_level
        self._global_level: CompatibilityLevel | None = None
        self._subject_levels: dict[str, CompatibilityLevel] = {}
        self._subjects: dict[str, _Subject] = {}
        self._schemas: dict[int, _Parsed] = {}
        self._ids: dict[str, int] = {}

    # ---- reads ----------------------------------------------------------

    @property
    def global_level(self) -> CompatibilityLevel:
        return self._global_level or self._default_level

    def subject_level(self, subject: str) -> CompatibilityLevel | None:
        return self._subject_levels.get(subject)

    def effective_level(self, subject: str) -> CompatibilityLevel:
        return self._subject_levels.get(subject, self.global_level)

    def subjects(
        self, *, deleted: bool = False, deleted_only: bool = False, prefix: str = ""
    ) -> list[str]:
        return sorted(
            name
            for name, subject in self._subjects.items()
            if name.startswith(prefix)
            and subject.visible(deleted=deleted, deleted_only=deleted_only)
        )

    def versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        found = self._subject(subject, deleted=deleted or deleted_only)
        return [v.version for v in found.visible(deleted=deleted, deleted_only=deleted_only)]

    def get_version(
        self, subject: str, version: int | str, *, deleted: bool = False
    ) -> SchemaVersion:
        wanted = parse_version(version)
        candidates = self._subject(subject, deleted=deleted).visible(deleted=deleted)
        if wanted == "latest":
            if not candidates:
                raise _version_not_found(subject, wanted)
            return candidates[-1]
        for candidate in candidates:
            if candidate.version == wanted:
                return candidate
        raise _version_not_found(subject, wanted)

    def schema_by_id(self, schema_id: int) -> str:
        parsed = self._schemas.get(schema_id)
        if parsed is None:
            raise RegistryRequestError(40403, f"Schema {schema_id} not found.")
        return parsed.canonical

    def versions_by_id(self, schema_id: int, *, deleted: bool = False) -> list[SchemaVersion]:
        self.schema_by_id(schema_id)
        return [
            version
            for name in sorted(self._subjects)
            for version in self._subjects[name].visible(deleted=deleted)
            if version.schema_id == schema_id
        ]

    def lookup(self, subject: str, schema: object, *, deleted: bool = False) -> SchemaVersion:
        """The subject's version holding ``schema`` (whitespace aside)."""
        canonical = _parse_schema(schema).canonical
        versions = self._subject(subject, deleted=deleted).visible(deleted=deleted)
        for version in reversed(versions):
            if version.schema == canonical:
                return version
        raise RegistryRequestError(40403, f"Schema not found under subject '{subject}'.")

    def check_compatibility(
        self, subject: str, schema: object, version: int | str | None = None
    ) -> CompatibilityResult:
        """Against one version (``version`` given) or as a registration would be checked."""
        candidate = _parse_schema(schema)
        level = self.effective_level(subject)
        if version is None:
            return self._check(subject, candidate, level, self._compared_with(subject, level))
        target = self.get_version(subject, version)
        return self._check(subject, candidate, level, [target])

    # ---- plans: validate and build the record, never mutate ----------------

    def plan_register(
        self,
        subject: str,
        schema: object,
        schema_type: object = AVRO,
        references: Sequence[object] | None = None,
    ) -> Registration:
        candidate = _parse_schema(schema, schema_type, references)
        existing = self._subjects.get(subject)
        live = existing.live() if existing else []
        for version in live:
            if version.schema == candidate.canonical:
                return Registration(version.schema_id, version.version, None)
        level = self.effective_level(subject)
        result = self._check(subject, candidate, level, self._compared_with(subject, level))
        if not result.is_compatible:
            raise IncompatibleSchemaError(
                "Schema being registered is incompatible with an earlier schema for subject "
                f'"{subject}", details: [{"; ".join(result.messages)}]'
            )
        schema_id = self._ids.get(candidate.canonical, max(self._schemas, default=0) + 1)
        number = max(existing.versions, default=0) + 1 if existing else 1
        record = SchemaVersion(subject, number, schema_id, candidate.canonical)
        return Registration(schema_id, number, _schema_change(record))

    def plan_set_level(self, level: object, subject: str | None = None) -> Change:
        parsed = CompatibilityLevel.parse(level)
        return Change(_config_key(subject), {"compatibilityLevel": parsed.value})

    def plan_delete_level(self, subject: str | None = None) -> tuple[CompatibilityLevel, Change]:
        """Returns the level in force before the delete."""
        if subject is None:
            return self.global_level, Change(_config_key(None), None)
        level = self._subject_levels.get(subject)
        if level is None:
            raise RegistryRequestError(
                40408, f"Subject '{subject}' does not have subject-level compatibility configured"
            )
        return level, Change(_config_key(subject), None)

    def plan_delete_subject(
        self, subject: str, *, permanent: bool = False
    ) -> tuple[list[int], Change]:
        found = self._subject(subject, deleted=True)
        if not permanent and not found.live():
            raise RegistryRequestError(
                40404,
                f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
            )
        if permanent:
            if found.live():
                raise RegistryRequestError(
                    40405,
                    f"Subject '{subject}' was not deleted first before being permanently deleted",
                )
            gone = [v.version for v in found.visible(deleted=True)]
            key = {"keytype": "CLEAR_SUBJECT", "subject": subject, "magic": 0}
            return gone, Change(key, {"subject": subject})
        live = [v.version for v in found.live()]
        key = {"keytype": "DELETE_SUBJECT", "subject": subject, "magic": 0}
        return live, Change(key, {"subject": subject, "version": max(live)})

    def plan_delete_version(
        self, subject: str, version: int | str, *, permanent: bool = False
    ) -> tuple[int, Change]:
        target = self.get_version(subject, version, deleted=permanent)
        if permanent:
            if not target.deleted:
                raise RegistryRequestError(
                    40407,
                    f"Subject '{subject}' Version {target.version} was not deleted first "
                    "before being permanently deleted",
                )
            return target.version, Change(_schema_key(subject, target.version), None)
        return target.version, _schema_change(replace(target, deleted=True))

    # ---- apply: the only mutation, shared by live writes and replay ---------

    def apply(self, change: Change) -> None:
        key, value = change.key, change.value
        keytype = key.get("keytype")
        subject = key.get("subject")
        if keytype == "SCHEMA" and isinstance(subject, str):
            self._apply_schema(subject, int(key["version"]), value)
        elif keytype == "CONFIG":
            self._apply_config(subject if isinstance(subject, str) else None, value)
        elif keytype == "DELETE_SUBJECT" and isinstance(subject, str) and value is not None:
            self._apply_delete_subject(subject, int(value["version"]))
        elif keytype == "CLEAR_SUBJECT" and isinstance(subject, str):
            self._apply_clear_subject(subject)

    def apply_record(self, key: bytes | None, value: bytes | None) -> None:
        """Replays one ``_schemas`` record; raises ValueError on a malformed one."""
        if key is None:
            raise ValueError("record without a key")
        decoded_key = json.loads(key)
        decoded_value = None if value is None else json.loads(value)
        if not isinstance(decoded_key, dict) or not (
            decoded_value is None or isinstance(decoded_value, dict)
        ):
            raise ValueError("key and value must be JSON objects")
        self.apply(Change(decoded_key, decoded_value))

    # ---- internals --------------------------------------------------------

    def _subject(self, subject: str, *, deleted: bool = False) -> _Subject:
        found = self._subjects.get(subject)
        if found is None or not found.visible(deleted=deleted):
            raise _subject_not_found(subject)
        return found

    def _compared_with(self, subject: str, level: CompatibilityLevel) -> list[SchemaVersion]:
        existing = self._subjects.get(subject)
        live = existing.live() if existing else []
        if level is CompatibilityLevel.NONE or not live:
            return []
        return list(reversed(live)) if level.transitive else [live[-1]]

    def _check(
        self,
        subject: str,
        candidate: _Parsed,
        level: CompatibilityLevel,
        previous: Iterable[SchemaVersion],
    ) -> CompatibilityResult:
        if level is CompatibilityLevel.NONE:
            return CompatibilityResult(True)
        messages: list[str] = []
        for old_version in previous:
            old = self._schemas[old_version.schema_id]
            label = f"version {old_version.version}"
            if level.backward:
                result = _check_pair(candidate, old)
                if result.compatibility is SchemaCompatibilityType.incompatible:
                    direction = f"the new schema cannot read data written with {label}"
                    messages.append(_describe(result, candidate.document, direction, level))
            if level.forward:
                result = _check_pair(old, candidate)
                if result.compatibility is SchemaCompatibilityType.incompatible:
                    direction = f"{label} cannot read data written with the new schema"
                    messages.append(_describe(result, old.document, direction, level))
        return CompatibilityResult(not messages, tuple(messages))

    def _apply_schema(self, subject: str, number: int, value: Mapping[str, Any] | None) -> None:
        if value is None:
            existing = self._subjects.get(subject)
            if existing is not None:
                existing.versions.pop(number, None)
            return
        schema_id = int(value["id"])
        if schema_id not in self._schemas:
            parsed = _parse_schema(value["schema"], value.get("schemaType", AVRO))
            self._schemas[schema_id] = parsed
            self._ids.setdefault(parsed.canonical, schema_id)
        record = SchemaVersion(
            subject,
            number,
            schema_id,
            self._schemas[schema_id].canonical,
            deleted=bool(value.get("deleted", False)),
        )
        self._subjects.setdefault(subject, _Subject()).versions[number] = record

    def _apply_config(self, subject: str | None, value: Mapping[str, Any] | None) -> None:
        level = None if value is None else CompatibilityLevel.parse(value["compatibilityLevel"])
        if subject is None:
            self._global_level = level
        elif level is None:
            self._subject_levels.pop(subject, None)
        else:
            self._subject_levels[subject] = level

    def _apply_delete_subject(self, subject: str, up_to: int) -> None:
        existing = self._subjects.get(subject)
        if existing is None:
            return
        for number, version in list(existing.versions.items()):
            if number <= up_to and not version.deleted:
                existing.versions[number] = replace(version, deleted=True)

    def _apply_clear_subject(self, subject: str) -> None:
        existing = self._subjects.get(subject)
        if existing is None:
            return
        for number, version in list(existing.versions.items()):
            if version.deleted:
                del existing.versions[number]
        if not existing.versions:
            del self._subjects[subject]


def _schema_key(subject: str, version: int) -> dict[str, Any]:
    return {"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1}


def _schema_change(version: SchemaVersion) -> Change:
    value: dict[str, Any] = {
        "subject": version.subject,
        "version": version.version,
        "id": version.schema_id,
        "schema": version.schema,
        "deleted": version.deleted,
    }
    if version.schema_type != AVRO:
        value["schemaType"] = version.schema_type
    return Change(_schema_key(version.subject, version.version), value)


def _config_key(subject: str | None) -> dict[str, Any]:
    return {"keytype": "CONFIG", "subject": subject, "magic": 0}
