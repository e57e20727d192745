"""Every catalog dataset's pydantic model and raw Avro schema describe the same record.

Both directions, with generated records (seeded, so a failure replays):
- model → Avro → model: values generated from the model's annotations and constraints,
  wrapped in the envelope, encoded strictly (no missing or extra field), decoded and
  validated again: equal to what was generated;
- Avro → model: values generated from the schema's types (records, enums, unions with
  null, primitives, logical types), encoded, decoded, and ``after`` validated by the model.

String values for a field the model constrains (length, pattern) follow the model's
constraints in both directions: the test is about structure (names, types, nullability,
enum symbols), which is what a drift between the two files breaks.
"""

from __future__ import annotations

import io
import json
import random
import re
import string
import types
import typing
import uuid
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any

import fastavro
import pytest
from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo

from schemas.catalog import DATASETS, DOSSIERS, Dataset, load_schema
from schemas.catalog_check import envelope_record
from schemas.models.common import Sex
from schemas.models.public_service import Channel, DossierStatus

SAMPLES = 150
_TEXT = string.ascii_letters + string.digits + " -/.ạăâđêôơưáàảãấầẩẫậắằẳẵặéèẻẽẹếềểễệíìỉĩịóòỏõọố"
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)

# ---- regex-driven strings (for constrained fields), from the parsed pattern ------

_parser: Any = getattr(re, "_parser", None)
if _parser is None:  # pragma: no cover - Python < 3.11
    import sre_parse as _parser
_const: Any = getattr(re, "_constants", None)
if _const is None:  # pragma: no cover
    import sre_constants as _const


def _from_category(rng: random.Random, category: Any) -> str:
    if category == _const.CATEGORY_DIGIT:
        return rng.choice(string.digits)
    if category == _const.CATEGORY_SPACE:
        return " "
    if category == _const.CATEGORY_WORD:
        return rng.choice(string.ascii_letters + string.digits + "_")
    return rng.choice(string.ascii_letters)


def _from_parsed(rng: random.Random, items: Any) -> str:
    out: list[str] = []
    for op, arg in items:
        if op == _const.LITERAL:
            out.append(chr(arg))
        elif op == _const.ANY:
            out.append(rng.choice(string.ascii_letters))
        elif op == _const.IN:
            choices: list[str] = []
            for kind, value in arg:
                if kind == _const.LITERAL:
                    choices.append(chr(value))
                elif kind == _const.RANGE:
                    choices += [chr(c) for c in range(value[0], value[1] + 1)]
                elif kind == _const.CATEGORY:
                    choices.append(_from_category(rng, value))
            out.append(rng.choice(choices))
        elif op in (_const.MAX_REPEAT, _const.MIN_REPEAT):
            low, high, sub = arg
            high = min(high, low + 5)
            out += [_from_parsed(rng, sub) for _ in range(rng.randint(low, high))]
        elif op == _const.SUBPATTERN:
            out.append(_from_parsed(rng, arg[-1]))
        elif op == _const.BRANCH:
            out.append(_from_parsed(rng, rng.choice(arg[1])))
        elif op == _const.CATEGORY:
            out.append(_from_category(rng, arg))
        # AT (anchors) and anything else produce nothing
    return "".join(out)


def string_from_pattern(rng: random.Random, pattern: str) -> str:
    return _from_parsed(rng, _parser.parse(pattern))


# ---- values from a pydantic model ------------------------------------------------


def _constraints(metadata: list[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            found.update(_constraints(list(item.metadata)))
            continue
        for name in ("min_length", "max_length", "ge", "gt", "le", "lt", "pattern"):
            value = getattr(item, name, None)
            if value is not None:
                found[name] = value
    return found


def _text(rng: random.Random, low: int, high: int) -> str:
    length = rng.randint(low, min(high, low + 30))
    # No leading/trailing blanks: a model may strip them.
    return "".join(rng.choice(_TEXT) for _ in range(length)).strip().ljust(length, "x")


def unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any], bool]:
    """(base type, constraints, optional) with Annotated and ``X | None`` peeled off."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata = [*metadata, *extra]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, metadata, optional
            annotation = args[0]
        else:
            return annotation, metadata, optional


def _count(rng: random.Random, c: dict[str, Any]) -> int:
    low = int(c.get("min_length", 0))
    return rng.randint(low, max(low, min(int(c.get("max_length", 3)), 3)))


def _is_datetime(annotation: Any) -> bool:
    name = getattr(annotation, "__name__", "")
    return (isinstance(annotation, type) and issubclass(annotation, datetime)) or name in (
        "AwareDatetime",
        "PastDatetime",
        "FutureDatetime",
    )


def value_for(rng: random.Random, annotation: Any, metadata: list[Any]) -> Any:
    """A value of ``annotation`` satisfying the constraints in ``metadata``."""
    annotation, metadata, optional = unwrap(annotation, metadata)
    if optional and rng.random() < 0.3:
        return None
    origin = typing.get_origin(annotation)
    c = _constraints(metadata)
    if origin in (typing.Union, types.UnionType):
        return value_for(rng, rng.choice(typing.get_args(annotation)), metadata)
    if origin is list:
        (item,) = typing.get_args(annotation)
        return [value_for(rng, item, []) for _ in range(_count(rng, c))]
    if origin is dict:
        key, item = typing.get_args(annotation)
        return {value_for(rng, key, []): value_for(rng, item, []) for _ in range(_count(rng, c))}
    if origin is typing.Literal:
        return rng.choice(typing.get_args(annotation))
    if _is_datetime(annotation):
        return _EPOCH + timedelta(milliseconds=rng.randint(0, 10**11))
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return model_values(rng, annotation)
        if issubclass(annotation, Enum):
            return rng.choice(list(annotation))
        if issubclass(annotation, bool):
            return rng.random() < 0.5
        if issubclass(annotation, int):
            low = c.get("ge", c.get("gt", -1) + 1 if "gt" in c else 0)
            high = c.get("le", c.get("lt", 1) - 1 if "lt" in c else 1_000_000)
            return rng.randint(int(low), int(high))
        if issubclass(annotation, float):
            low = float(c.get("ge", c.get("gt", 0.0)))
            high = float(c.get("le", c.get("lt", 10_000.0)))
            # Multiples of 1/4 survive a 32-bit Avro float exactly.
            low, high = low + 0.25 * ("gt" in c), high - 0.25 * ("lt" in c)
            return min(max(round(rng.uniform(low, high) * 4) / 4, low), high)
        if issubclass(annotation, date):
            return date(2020, 1, 1) + timedelta(days=rng.randint(0, 3000))
        if issubclass(annotation, str):
            if "pattern" in c:
                return string_from_pattern(rng, str(c["pattern"]))
            return _text(rng, int(c.get("min_length", 0)), int(c.get("max_length", 40)))
    raise TypeError(f"no generator for {annotation!r}")


def _field_value(rng: random.Random, info: FieldInfo) -> Any:
    return value_for(rng, info.annotation, list(info.metadata))


def model_values(rng: random.Random, model: type[BaseModel]) -> dict[str, Any]:
    return {name: _field_value(rng, info) for name, info in model.model_fields.items()}


def _plain(value: Any) -> Any:
    """Model values as fastavro writes them: enum members as their values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ---- values from an Avro schema ---------------------------------------------------


Hint = tuple[Any, list[Any]] | None
"""The model's (annotation, constraints) at the same place as the Avro type, if any."""


def _child(hint: Hint, kind: str, name: str | None = None) -> Hint:
    """The model's annotation one level down: a record's field, an array item, a map value."""
    if hint is None:
        return None
    annotation, _, _ = unwrap(*hint)
    if kind == "record" and isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(name or "")
        return None if info is None else (info.annotation, list(info.metadata))
    args = typing.get_args(annotation)
    if kind == "array" and typing.get_origin(annotation) is list:
        return (args[0], [])
    if kind == "map" and typing.get_origin(annotation) is dict:
        return (args[1], [])
    return None


_AVRO_PY: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
}


class AvroGenerator:
    """Values for an Avro schema. Where the model has a constrained leaf at the same place
    (field of the same name, array item, map value), a leaf value meeting its constraints
    is used if it has the Avro type; the structure always comes from the schema."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.named: dict[str, Any] = {}

    def learn(self, schema: Any, namespace: str = "") -> None:
        """Record every named type, so later references resolve."""
        if isinstance(schema, list):
            for branch in schema:
                self.learn(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema["type"]
            if kind in ("record", "enum", "fixed"):
                namespace = schema.get("namespace", namespace)
                self.named[schema["name"]] = schema
                self.named[f"{namespace}.{schema['name']}"] = schema
            for f in schema.get("fields", []):
                self.learn(f["type"], namespace)
            for key in ("items", "values"):
                if key in schema:
                    self.learn(schema[key], namespace)
            if isinstance(kind, (dict, list)):
                self.learn(kind, namespace)

    def _leaf(self, kind: str, hint: Hint) -> Any:
        if hint is None or kind not in _AVRO_PY:
            return None
        for _ in range(5):
            value = value_for(self.rng, hint[0], hint[1])
            if isinstance(value, _AVRO_PY[kind]) and not isinstance(value, (bool, Enum)):
                return value
        return None

    def value(self, schema: Any, namespace: str = "", hint: Hint = None) -> Any:
        rng = self.rng
        if isinstance(schema, list):
            branch = rng.choice(schema)
            if "null" in schema and len(schema) == 2:
                branch = "null" if rng.random() < 0.3 else next(b for b in schema if b != "null")
            return self.value(branch, namespace, hint)
        if isinstance(schema, str):
            if schema in self.named or f"{namespace}.{schema}" in self.named:
                named = self.named.get(schema) or self.named[f"{namespace}.{schema}"]
                return self.value(named, namespace, hint)
            schema = {"type": schema}
        kind = schema["type"]
        if isinstance(kind, (dict, list)):
            return self.value(kind, namespace, hint)
        namespace = schema.get("namespace", namespace)
        if kind == "record":
            return {
                f["name"]: self.value(f["type"], namespace, _child(hint, "record", f["name"]))
                for f in schema["fields"]
            }
        if kind == "enum":
            return rng.choice(schema["symbols"])
        if kind == "array":
            item = _child(hint, "array")
            return [self.value(schema["items"], namespace, item) for _ in range(rng.randint(1, 3))]
        if kind == "map":
            item = _child(hint, "map")
            keys = [f"k{i}" for i in range(rng.randint(1, 3))]
            if hint is not None and typing.get_origin(unwrap(*hint)[0]) is dict:
                key_type = typing.get_args(unwrap(*hint)[0])[0]
                keys = [str(value_for(rng, key_type, [])) for _ in keys]
            return {k: self.value(schema["values"], namespace, item) for k in keys}
        logical = schema.get("logicalType")
        if logical in ("timestamp-millis", "timestamp-micros"):
            return _EPOCH + timedelta(milliseconds=rng.randint(0, 10**11))
        if logical == "date":
            return date(2020, 1, 1) + timedelta(days=rng.randint(0, 3000))
        if logical == "uuid":
            return str(uuid.UUID(int=rng.getrandbits(128)))
        hinted = self._leaf(kind, hint)
        if hinted is not None:
            return hinted
        if kind == "string":
            return _text(rng, 1, 20)
        if kind in ("int", "long"):
            return rng.randint(0, 100_000)
        if kind in ("float", "double"):
            return round(rng.uniform(0, 1000) * 4) / 4
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        raise TypeError(f"no generator for Avro type {schema!r}")


# ---- the round trips ----------------------------------------------------------------


def _envelope(rng: random.Random, dataset: Dataset, before: Any, after: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "op": rng.choice(["c", "u", "r"]),
        "ts_ms": _EPOCH,
        "source": {
            "system": dataset.source_system,
            "unit": dataset.owner_unit,
            "dataset": dataset.id,
            "ts_ms": _EPOCH,
            "version": 1,
        },
        "before": before,
        "after": after,
    }


def _avro_round_trip(schema: Any, event: dict[str, Any], *, strict: bool) -> Any:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, event, strict=strict)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, schema, schema)


def model_to_avro_to_model(
    dataset: Dataset, model: type[BaseModel], schema_text: str, seed: int
) -> None:
    rng = random.Random(seed)
    schema = fastavro.parse_schema(json.loads(schema_text))
    for _ in range(SAMPLES):
        original = model.model_validate(model_values(rng, model))
        record = _plain(original.model_dump())
        event = _envelope(rng, dataset, None, record)
        decoded = _avro_round_trip(schema, event, strict=True)
        again = model.model_validate(decoded["after"])
        assert again == original, f"{dataset.id}: {again!r} != {original!r}"


def avro_to_model(dataset: Dataset, model: type[BaseModel], schema_text: str, seed: int) -> None:
    rng = random.Random(seed)
    document = json.loads(schema_text)
    schema = fastavro.parse_schema(json.loads(schema_text))
    record_schema = envelope_record(document)
    generator = AvroGenerator(rng)
    generator.learn(document)
    namespace = document.get("namespace", "")
    for _ in range(SAMPLES):
        after = generator.value(record_schema, namespace, (model, []))
        event = _envelope(rng, dataset, None, after)
        decoded = _avro_round_trip(schema, event, strict=False)
        model.model_validate(decoded["after"])


CATALOG = sorted(DATASETS.values(), key=lambda d: d.id)


@pytest.mark.parametrize("dataset", CATALOG, ids=lambda d: d.id)
def test_model_to_avro_to_model(dataset: Dataset) -> None:
    model_to_avro_to_model(dataset, dataset.model, load_schema(dataset.raw_schema), seed=1)


@pytest.mark.parametrize("dataset", CATALOG, ids=lambda d: d.id)
def test_avro_to_model(dataset: Dataset) -> None:
    avro_to_model(dataset, dataset.model, load_schema(dataset.raw_schema), seed=2)


# ---- a deliberately mismatched model must fail both ways ------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DossierWithoutSex(_Frozen):
    """Like Dossier, but missing a field the schema has."""

    dossier_id: str
    dossier_code: str
    procedure_code: str
    procedure_name: str
    receiving_unit_code: str
    admin_unit_code: str
    applicant_citizen_id: str
    applicant_name: str
    applicant_birth_date: str | None = None
    status: DossierStatus
    channel: Channel
    received_at: str
    due_at: str
    completed_at: str | None = None


class DossierNarrowStatus(_Frozen):
    """Like Dossier, but its status code list lacks symbols the schema has."""

    class Status(StrEnum):
        RECEIVED = "RECEIVED"
        COMPLETED = "COMPLETED"

    dossier_id: str
    dossier_code: str
    procedure_code: str
    procedure_name: str
    receiving_unit_code: str
    admin_unit_code: str
    applicant_citizen_id: str
    applicant_name: str
    applicant_birth_date: str | None = None
    applicant_sex: Sex | None = None
    status: Status
    channel: Channel
    received_at: str
    due_at: str
    completed_at: str | None = None


class DossierExtraField(_Frozen):
    """Like Dossier, plus a field the schema lacks; received_at typed as an int."""

    dossier_id: str
    dossier_code: str
    procedure_code: str
    procedure_name: str
    receiving_unit_code: str
    admin_unit_code: str
    applicant_citizen_id: str
    applicant_name: str
    applicant_birth_date: str | None = None
    applicant_sex: Sex | None = None
    status: DossierStatus
    channel: Channel
    received_at: int
    due_at: str
    completed_at: str | None = None
    priority: int = 0


def test_model_to_avro_fails_for_a_model_missing_a_schema_field() -> None:
    with pytest.raises(ValueError, match="applicant_sex"):
        model_to_avro_to_model(DOSSIERS, DossierWithoutSex, load_schema(DOSSIERS.raw_schema), 1)


def test_model_to_avro_fails_for_a_model_with_an_extra_field() -> None:
    with pytest.raises((ValueError, TypeError)):
        model_to_avro_to_model(DOSSIERS, DossierExtraField, load_schema(DOSSIERS.raw_schema), 1)


def test_avro_to_model_fails_for_a_model_missing_a_schema_field() -> None:
    with pytest.raises(ValueError, match="applicant_sex"):
        avro_to_model(DOSSIERS, DossierWithoutSex, load_schema(DOSSIERS.raw_schema), 2)


def test_avro_to_model_fails_for_a_narrower_enum() -> None:
    with pytest.raises(ValueError, match="status"):
        avro_to_model(DOSSIERS, DossierNarrowStatus, load_schema(DOSSIERS.raw_schema), 2)


def test_avro_to_model_fails_for_a_wrongly_typed_field() -> None:
    with pytest.raises(ValueError, match="received_at"):
        avro_to_model(DOSSIERS, DossierExtraField, load_schema(DOSSIERS.raw_schema), 2)


def test_generators_respect_constraints() -> None:
    rng = random.Random(0)
    for _ in range(200):
        value = string_from_pattern(rng, r"^(0[0-9]{11}|[0-9]{9})$")
        assert re.fullmatch(r"0[0-9]{11}|[0-9]{9}", value)
