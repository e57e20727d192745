"""What ``databus tail`` prints for one record: decoded, personal fields masked.

Pure functions; ``databus.ops_cli`` reads the topic. A topic of the catalog
(``<dataset>.<stage>.v<major>``) is masked with its dataset's personal fields. Any other
topic (alerts, quality reports, a sink's DLQ, an agency's topic) has no catalog entry
to go by, so every field *named* like personal data is masked: the catalog's personal
field names, and names holding ``citizen``, ``birth``, ``phone``, ``email``,
``address``, ``insurance``, ``sex``, ``gender`` or ending in ``name`` (``unit_name``
too: masking too much is the safe mistake). The masking itself is
``dlq_inspect.mask_personal``, the one ``databus dlq show`` uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from databus.dlq_inspect import MASK, framing_hint, mask_personal
from schemas.catalog import STAGES, Dataset

__all__ = [
    "TailRecord",
    "TopicMasking",
    "decode_json_value",
    "looks_personal",
    "masking_for",
    "personal_names_in",
    "render_line",
    "tail_record",
]

_PERSONAL_PARTS = ("citizen", "birth", "phone", "email", "address", "insurance", "gender")
# Headers worth a look; error messages are left out (they may quote a value).
_SHOWN_HEADERS = (
    "ce_id",
    "ce_type",
    "ce_source",
    "databus.backfill",
    "databus.replay.of",
    "databus.errors.stage",
    "databus.errors.reason",
    "databus.errors.field",
)


@dataclass(frozen=True)
class TopicMasking:
    """How a topic's records are masked: its dataset's personal fields, or (no
    dataset) every field named like personal data."""

    topic: str
    dataset: Dataset | None
    stage: str | None

    def fields_for(self, record: Any, catalog_names: Iterable[str] = ()) -> set[str]:
        if self.dataset is not None:
            return set(self.dataset.personal_fields)
        return personal_names_in(record, set(catalog_names))

    @property
    def key_is_personal(self) -> bool:
        if self.dataset is None:
            return True  # unknown keys may be a citizen id: never shown
        return bool(set(self.dataset.key_fields) & set(self.dataset.personal_fields))


def masking_for(topic: str, datasets: Iterable[Dataset]) -> TopicMasking:
    """The dataset and stage a topic name belongs to, if any."""
    for ds in datasets:
        for stage in STAGES:
            if ds.topic(stage) == topic:
                return TopicMasking(topic, ds, stage)
    return TopicMasking(topic, None, None)


def looks_personal(name: str, catalog_names: Iterable[str] = ()) -> bool:
    low = name.lower()
    if low in {n.lower() for n in catalog_names}:
        return True
    if any(part in low for part in _PERSONAL_PARTS):
        return True
    return low.endswith("name") or low in ("sex", "gender") or low.endswith("_sex")


def personal_names_in(record: Any, catalog_names: set[str]) -> set[str]:
    """Every mapping key, at any depth, that ``looks_personal``."""
    found: set[str] = set()
    stack = [record]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for k, v in item.items():
                if isinstance(k, str) and looks_personal(k, catalog_names):
                    found.add(k)
                stack.append(v)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def decode_json_value(value: bytes | None) -> Any | None:
    """A JSON value (some bus topics carry JSON, not Avro); None when it is not JSON."""
    if not value or value[:1] not in b'{["':
        return None
    try:
        return json.loads(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class TailRecord:
    topic: str
    partition: int
    offset: int
    timestamp: datetime | None
    key: str | None
    headers: dict[str, str]
    value: Any  # decoded and masked; None when not decoded
    note: str  # why the value was not decoded, else ""

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "key": self.key,
            "headers": self.headers,
            "value": self.value,
            **({"note": self.note} if self.note else {}),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return getattr(value, "value", value)  # enums as their value


def tail_record(
    masking: TopicMasking,
    *,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    decoded: Any | None,
    raw_value: bytes | None,
    catalog_names: Iterable[str] = (),
) -> TailRecord:
    """One record as ``tail`` shows it. ``decoded``: the value decoded (Avro or JSON),
    None when it could not be; then only a framing hint of ``raw_value`` is shown."""
    names = set(catalog_names)
    if decoded is None:
        value, note = None, f"not decoded: {framing_hint(raw_value)}"
    else:
        value = _jsonable(mask_personal(decoded, masking.fields_for(decoded, names)))
        note = ""
    shown_key: str | None = None
    if key is not None:
        shown_key = MASK if masking.key_is_personal else key.decode("utf-8", errors="replace")
    when = None
    if timestamp_ms is not None and timestamp_ms > 0:
        when = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    shown_headers = {
        k: (v or b"").decode("utf-8", errors="replace") for k, v in headers if k in _SHOWN_HEADERS
    }
    return TailRecord(masking.topic, partition, offset, when, shown_key, shown_headers, value, note)


def render_line(record: TailRecord) -> str:
    """One JSON line (UTF-8 text kept readable: Vietnamese stays Vietnamese)."""
    return json.dumps(record.as_json(), ensure_ascii=False, default=str)
