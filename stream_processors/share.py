"""What a shared topic carries: the std event with its personal fields dropped or hashed.

Pure functions, no broker. For a dataset the access policy shares:

- ``share_plan`` derives the *shared* Avro schema from the std schema: the record inside
  the envelope loses every personal field; each join key ``f`` comes back as ``f_hash``,
  ``["null", "string"]`` with default null (so adding or removing a join key later is a
  BACKWARD-compatible change). Every named type moves from the ``…std`` namespace to
  ``…shared``, and the top record is renamed ``…SharedEvent``: a shared event can never
  be taken for a std one by a reader that checks names.
- ``mask_event`` builds the shared event from a decoded std event: personal fields
  removed, join keys replaced by ``keyed_hash`` (hex HMAC-SHA256 under the pseudonym
  key). It copies only the fields the shared schema has, so a field added to the std
  schema later is not shared until the schema derivation has seen it.
- ``shared_key`` is the Kafka key: the std key, unless a key field is personal, in which
  case it is hashed too.

A restricted dataset has no plan: ``share_plan`` refuses it, whatever the policy says.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.errors import ConfigError
from schemas.catalog import Dataset, load_schema, value_subject

__all__ = ["HASH_SUFFIX", "SharePlan", "keyed_hash", "mask_event", "share_plan", "shared_key"]

HASH_SUFFIX = "_hash"
_IMAGES = ("before", "after")


def keyed_hash(key: bytes, value: object) -> str:
    """Hex HMAC-SHA256 of a value's text: the same value always gives the same hash."""
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SharePlan:
    dataset: Dataset
    hashed: tuple[str, ...]  # personal fields published as <field>_hash
    dropped: tuple[str, ...]  # personal fields not published at all
    kept: tuple[str, ...]  # fields of the inner record copied as they are
    schema_str: str  # the shared schema (Avro JSON)
    std_topic: str
    shared_topic: str

    @property
    def subject(self) -> str:
        return value_subject(self.shared_topic)

    @property
    def fields(self) -> tuple[str, ...]:
        """The inner record's fields on the shared topic, in schema order."""
        return self.kept + tuple(f + HASH_SUFFIX for f in self.hashed)


def _shared_namespace(namespace: str) -> str:
    head, dot, last = namespace.rpartition(".")
    if last == "std":
        return f"{head}{dot}shared"
    return f"{namespace}.shared"


def _inner_record(schema: dict[str, Any]) -> dict[str, Any]:
    """The record definition inside the envelope (the non-null branch of ``before``)."""
    for field in schema.get("fields", []):
        if field["name"] == "before" and isinstance(field["type"], list):
            for branch in field["type"]:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    return branch
    raise ConfigError(f"{schema.get('name')}: no record inside the envelope's 'before'")


def _renamespace(node: Any) -> None:
    """Move every explicitly namespaced named type to the shared namespace."""
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "namespace" in node:
            node["namespace"] = _shared_namespace(node["namespace"])
        for value in node.values():
            _renamespace(value)
    elif isinstance(node, list):
        for value in node:
            _renamespace(value)


def share_plan(
    dataset: Dataset,
    join_keys: tuple[str, ...] = (),
    *,
    std_topic: str | None = None,
    shared_topic: str | None = None,
) -> SharePlan:
    """The shared schema and masking plan of a dataset (topics overridable for tests)."""
    if dataset.classification == "restricted":
        raise ConfigError(f"{dataset.id} is restricted: it is never published to a shared topic")
    unknown = [f for f in join_keys if f not in dataset.personal_fields]
    if unknown:
        raise ConfigError(f"{dataset.id}: join keys {unknown} are not personal fields")
    schema = json.loads(load_schema(dataset.std_value_schema))
    shared = copy.deepcopy(schema)
    inner = _inner_record(shared)
    names = [f["name"] for f in inner["fields"]]
    for field in join_keys:
        spec = next(f for f in inner["fields"] if f["name"] == field)
        branches = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
        if not all(b in ("null", "string") for b in branches):
            raise ConfigError(f"{dataset.id}.{field}: only string fields can be join keys")
    personal = set(dataset.personal_fields)
    inner["fields"] = [f for f in inner["fields"] if f["name"] not in personal] + [
        {
            "name": field + HASH_SUFFIX,
            "type": ["null", "string"],
            "default": None,
            "doc": f"HMAC-SHA256 (hex) of {field} under the bus's pseudonym key; "
            "a stable join key, not the value.",
        }
        for field in join_keys
    ]
    if "doc" in inner:
        inner["doc"] = f"{inner['doc']} Shared form: personal fields dropped or hashed."
    _renamespace(shared)
    name = str(shared["name"])
    shared["name"] = (name.removesuffix("StdEvent") or name) + "SharedEvent"
    shared["doc"] = (
        f"{dataset.id} as shared with downstream agencies: the std event without its "
        "personal fields (join keys as keyed hashes). Derived by stream_processors.share."
    )
    return SharePlan(
        dataset=dataset,
        hashed=tuple(join_keys),
        dropped=tuple(f for f in dataset.personal_fields if f not in join_keys and f in names),
        kept=tuple(n for n in names if n not in personal),
        schema_str=json.dumps(shared, ensure_ascii=False),
        std_topic=std_topic or dataset.std_topic,
        shared_topic=shared_topic or dataset.shared_topic,
    )


def _mask_record(plan: SharePlan, record: Mapping[str, Any] | None, key: bytes) -> Any:
    if record is None:
        return None
    out = {name: record[name] for name in plan.kept if name in record}
    for field in plan.hashed:
        value = record.get(field)
        out[field + HASH_SUFFIX] = None if value is None else keyed_hash(key, value)
    return out


def mask_event(plan: SharePlan, event: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """The shared event of a decoded std event (``key``: the pseudonym key)."""
    out = {k: v for k, v in event.items() if k not in _IMAGES}
    for image in _IMAGES:
        out[image] = _mask_record(plan, event.get(image), key)
    return out


def shared_key(plan: SharePlan, std_key: bytes | None, key: bytes) -> bytes | None:
    """The Kafka key on the shared topic: hashed when any key field is personal."""
    if std_key is None or not set(plan.dataset.key_fields) & set(plan.dataset.personal_fields):
        return std_key
    return keyed_hash(key, std_key.decode("utf-8", "replace")).encode("ascii")
