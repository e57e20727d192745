"""Reading dead letters: what ``databus dlq`` shows, and what a replay sends back.

Pure functions over what a consumer returns for a DLQ record (coordinates, timestamp,
headers); no broker here. ``schemas.dead_letters`` writes the headers this module
reads (``error_context``: Kafka Connect's ``__connect.errors.*`` names and the bus's
``databus.errors.*``, and the older letters' all-``databus.errors.*`` names alike).
Personal data never leaves ``mask_personal`` unmasked: names become ``***``,
identifiers keep their last two characters and their length (enough to see an
11-digit citizen id), other personal fields keep only a length class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.dead_letters import REPLAY_HEADER, error_context, is_error_header
from schemas.headers import ORIGINID_HEADER

__all__ = [
    "CODEC_REASONS",
    "MASK",
    "DeadLetterView",
    "SummaryRow",
    "framing_hint",
    "latest",
    "letter_id",
    "mask_personal",
    "mask_value",
    "next_step",
    "original_headers",
    "parse_dead_letter",
    "replay_headers",
    "select",
    "summarize",
]

MASK = "***"

Headers = Sequence[tuple[str, bytes | None]]

# The CodecError reasons of schemas.codec.serde: the bytes themselves are broken, so a
# replay of the same bytes fails the same way unless the registry changed.
CODEC_REASONS = frozenset(
    {
        "empty_value",
        "truncated_header",
        "bad_magic_byte",
        "unknown_schema_id",
        "not_avro",
        "wrong_schema",
        "truncated_payload",
        "invalid_utf8",
        "invalid_avro",
        "trailing_bytes",
    }
)

_TAIL_MIN_LENGTH = 6  # shorter identifiers show no characters at all
_TAIL = 2


def letter_id(topic: str, partition: int, offset: int) -> str:
    """``<dlq topic>:<partition>:<offset>``: names one letter (the replay header's value)."""
    return f"{topic}:{partition}:{offset}"


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", errors="replace")


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class DeadLetterView:
    """One dead letter as operators read it; empty strings where a header is missing."""

    dataset: str
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    timestamp: datetime | None
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    stage: str
    reason: str
    field: str
    exception_class: str
    message: str
    message_vi: str
    event_id: str
    replay_of: str
    origin_id: str = ""  # ce_originid: the source's event id a derived event came from

    @property
    def letter_id(self) -> str:
        return letter_id(self.dlq_topic, self.dlq_partition, self.dlq_offset)

    @property
    def original(self) -> str:
        """Where the record was refused from, ``topic[partition]@offset``."""
        if not self.original_topic:
            return "?"
        return f"{self.original_topic}[{self.original_partition}]@{self.original_offset}"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["timestamp"] = None if self.timestamp is None else self.timestamp.isoformat()
        out["letter_id"] = self.letter_id
        return out


def parse_dead_letter(
    dataset: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    headers: Headers | None,
    timestamp_ms: int | None = None,
) -> DeadLetterView:
    """The view of a DLQ record from its coordinates and headers.

    A record without error headers (written by something else) still parses: its
    stage and reason read ``unknown``.
    """
    # The last one wins: dlq_headers strips stale ones, but a hand-made record may not.
    errors = error_context(headers)
    first: dict[str, str] = {}
    for key, value in headers or ():
        if not is_error_header(key):
            first.setdefault(key, _text(value))
    when = None
    if timestamp_ms is not None and timestamp_ms > 0:
        when = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return DeadLetterView(
        dataset=dataset,
        dlq_topic=topic,
        dlq_partition=partition,
        dlq_offset=offset,
        timestamp=when,
        original_topic=errors.get("topic", ""),
        original_partition=_int_or_none(errors.get("partition", "")),
        original_offset=_int_or_none(errors.get("offset", "")),
        stage=errors.get("stage") or "unknown",
        reason=errors.get("reason") or "unknown",
        field=errors.get("field", ""),
        exception_class=errors.get("exception.class.name", ""),
        message=errors.get("exception.message", ""),
        message_vi=errors.get("exception.message.vi", ""),
        event_id=first.get("ce_id", ""),
        replay_of=first.get(REPLAY_HEADER, ""),
        origin_id=first.get(ORIGINID_HEADER, ""),
    )


def original_headers(headers: Headers | None) -> list[tuple[str, bytes]]:
    """The headers the source sent: error headers and any earlier replay mark removed,
    order and duplicates kept."""
    return [
        (k, v or b"") for k, v in headers or () if not is_error_header(k) and k != REPLAY_HEADER
    ]


def replay_headers(headers: Headers | None, of: str) -> list[tuple[str, bytes]]:
    """The headers of a replayed record: the original ones plus ``databus.replay.of``."""
    return [*original_headers(headers), (REPLAY_HEADER, of.encode())]


# ---- personal data ----------------------------------------------------------


def _is_name(field: str) -> bool:
    return "name" in field.lower()


def _is_identifier(field: str) -> bool:
    low = field.lower()
    return low.endswith(("_id", "_number", "phone")) or low in ("id", "citizen_id")


def _length_class(n: int) -> str:
    # Classes, not the length: "MALE"/"FEMALE" would otherwise give the value away.
    if n == 0:
        return "empty"
    if n <= 8:
        return "1-8 chars"
    if n <= 32:
        return "9-32 chars"
    return "over 32 chars"


def mask_value(field: str, value: Any) -> Any:
    """The masked form of one personal field's value; ``None`` stays ``None``."""
    if value is None:
        return None
    if _is_name(field):
        return MASK
    text = value if isinstance(value, str) else str(value)
    if _is_identifier(field):
        tail = text[-_TAIL:] if len(text) >= _TAIL_MIN_LENGTH else ""
        return f"{MASK}{tail} ({len(text)} chars)"
    return f"{MASK} ({_length_class(len(text))})"


def mask_personal(record: Any, personal_fields: Collection[str]) -> Any:
    """A copy of a decoded record with every personal field masked, at any depth
    (the fields live in the envelope's ``before`` and ``after``)."""
    if isinstance(record, Mapping):
        return {
            k: mask_value(k, v) if k in personal_fields else mask_personal(v, personal_fields)
            for k, v in record.items()
        }
    if isinstance(record, list | tuple):
        return [mask_personal(v, personal_fields) for v in record]
    return record


def framing_hint(value: bytes | None) -> str:
    """What the first byte of an undecodable value suggests; never its content."""
    if not value:
        return "the record has no value"
    first = value[0]
    guess = {
        0x7B: "looks like JSON: the source sent JSON, not Avro",
        0x5B: "looks like a JSON array: the source sent JSON, not Avro",
        0x3C: "looks like XML: the source sent XML, not Avro",
        0x00: "starts with the Avro framing byte",
    }.get(first, "not the Avro framing byte 0")
    return f"{len(value)} bytes, first byte 0x{first:02x} ({guess})"


# ---- lists and selections ---------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    dataset: str
    stage: str
    reason: str
    count: int


def summarize(letters: Iterable[DeadLetterView]) -> list[SummaryRow]:
    """Counts per (dataset, stage, reason): by dataset, then the largest count first."""
    counts = Counter((v.dataset, v.stage, v.reason) for v in letters)
    rows = [SummaryRow(d, s, r, n) for (d, s, r), n in counts.items()]
    return sorted(rows, key=lambda r: (r.dataset, -r.count, r.stage, r.reason))


def _recency(v: DeadLetterView) -> tuple[float, int, int]:
    ts = v.timestamp.timestamp() if v.timestamp is not None else float("-inf")
    return (ts, v.dlq_offset, v.dlq_partition)


def latest(letters: Iterable[DeadLetterView], n: int) -> list[DeadLetterView]:
    """The ``n`` most recent letters, newest first."""
    return sorted(letters, key=_recency, reverse=True)[: max(n, 0)]


def select(
    letters: Iterable[DeadLetterView],
    *,
    reason: str | None = None,
    stage: str | None = None,
    offsets: Collection[int] = (),
    partition: int | None = None,
) -> list[DeadLetterView]:
    """The letters matching every given filter, in source order (original partition
    and offset, so a replay keeps each key's order), then DLQ order."""
    chosen = [
        v
        for v in letters
        if (reason is None or v.reason == reason)
        and (stage is None or v.stage == stage)
        and (not offsets or v.dlq_offset in offsets)
        and (partition is None or v.dlq_partition == partition)
    ]
    return sorted(
        chosen,
        key=lambda v: (
            v.original_topic,
            v.original_partition if v.original_partition is not None else -1,
            v.original_offset if v.original_offset is not None else -1,
            v.dlq_partition,
            v.dlq_offset,
        ),
    )


def next_step(view: DeadLetterView) -> str:
    """What an operator should do about this letter."""
    replay = (
        f"databus dlq replay --dataset {view.dataset} "
        f"--partition {view.dlq_partition} --offset {view.dlq_offset}"
    )
    if view.reason == "unknown_schema_id":
        return (
            "The schema the source used is not in the registry. Register it "
            f"(`databus schemas register`), then replay: `{replay}`."
        )
    if view.reason in CODEC_REASONS:
        return (
            "The bytes are not a valid event; replaying them fails the same way. Ask the "
            "source system to send the event again, correctly encoded (the Publisher does)."
        )
    where = f" (field {view.field})" if view.field else ""
    return (
        f"The record broke a rule{where}. If the source was wrong, it must send a corrected "
        "version (nothing to replay). If the rule or reference data was wrong and is now "
        f"fixed, replay the letter: `{replay}` (add --dry-run to preview)."
    )
