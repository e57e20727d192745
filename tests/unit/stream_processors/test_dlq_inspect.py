"""Reading dead letters: header parsing, masking, summaries, selection, replay headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from databus.dlq_inspect import (
    MASK,
    DeadLetterView,
    framing_hint,
    latest,
    letter_id,
    mask_personal,
    mask_value,
    next_step,
    original_headers,
    parse_dead_letter,
    replay_headers,
    select,
    summarize,
)
from schemas.catalog import DATASETS
from schemas.dead_letters import HEADER_PREFIX, REPLAY_HEADER, DeadLetter, dlq_headers

DS = "publicservice.dossiers"
DLQ = "publicservice.dossiers.dlq.v1"
ORIGINAL: list[tuple[str, bytes | None]] = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"),
    ("ce_source", b"/databus/portal/DNA.STP"),
    ("ce_type", b"vn.gov.databus.publicservice.dossiers.c"),
    ("ce_time", b"2026-03-01T08:00:00.000+00:00"),
    ("content-type", b"application/avro"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("x-dup", b"one"),
    ("x-dup", b"two"),
]
LETTER = DeadLetter(
    stage="standardize",
    reason="invalid_citizen_id",
    exception_class="bus.errors.ValidationError",
    message="citizen id has 11 digits, expected 12 (or 9)",
    message_vi="Số định danh cá nhân có 11 chữ số, cần 12 (hoặc 9)",
    field="applicant_citizen_id",
)
CITIZEN_ID = "075190000042"
NAME = "Nguyễn Thị Hòa"


def headers(
    letter: DeadLetter = LETTER, original: list[tuple[str, bytes | None]] = ORIGINAL
) -> list[tuple[str, bytes]]:
    return dlq_headers(
        original, topic="publicservice.dossiers.raw.v1", partition=3, offset=12345, letter=letter
    )


def view(
    offset: int = 7,
    *,
    partition: int = 0,
    letter: DeadLetter = LETTER,
    ts_ms: int | None = 1_760_000_000_000,
    dataset: str = DS,
) -> DeadLetterView:
    return parse_dead_letter(
        dataset,
        topic=f"{dataset}.dlq.v1",
        partition=partition,
        offset=offset,
        headers=headers(letter),
        timestamp_ms=ts_ms,
    )


def test_a_dead_letter_reads_back_everything_dlq_headers_wrote() -> None:
    v = view(offset=42, partition=1)
    assert v.dataset == DS
    assert (v.dlq_topic, v.dlq_partition, v.dlq_offset) == (DLQ, 1, 42)
    assert v.letter_id == f"{DLQ}:1:42" == letter_id(DLQ, 1, 42)
    assert v.original_topic == "publicservice.dossiers.raw.v1"
    assert (v.original_partition, v.original_offset) == (3, 12345)
    assert v.original == "publicservice.dossiers.raw.v1[3]@12345"
    assert (v.stage, v.reason, v.field) == ("standardize", "invalid_citizen_id", LETTER.field)
    assert v.exception_class == "bus.errors.ValidationError"
    assert v.message == LETTER.message
    assert v.message_vi == LETTER.message_vi
    assert v.event_id == "7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"
    assert v.timestamp == datetime.fromtimestamp(1_760_000_000, tz=UTC)
    assert v.replay_of == ""


def old_style_headers(letter: DeadLetter = LETTER) -> list[tuple[str, bytes | None]]:
    """What dlq_headers wrote before the Kafka Connect names: all under databus.errors."""
    context = {
        "topic": "publicservice.dossiers.raw.v1",
        "partition": "3",
        "offset": "12345",
        "stage": letter.stage,
        "reason": letter.reason,
        "field": letter.field,
        "exception.class.name": letter.exception_class,
        "exception.message": letter.message,
        "exception.message.vi": letter.message_vi,
    }
    return [*ORIGINAL, *((HEADER_PREFIX + k, v.encode()) for k, v in context.items())]


def test_an_old_style_letter_reads_the_same_as_a_new_one() -> None:
    def parse(h: list[tuple[str, bytes | None]]) -> DeadLetterView:
        return parse_dead_letter(DS, topic=DLQ, partition=1, offset=42, headers=h)

    old, new = parse(old_style_headers()), parse(list(headers()))
    assert old == new
    assert old.original == "publicservice.dossiers.raw.v1[3]@12345"
    assert (old.stage, old.reason, old.field) == ("standardize", "invalid_citizen_id", LETTER.field)
    assert (old.exception_class, old.message) == (LETTER.exception_class, LETTER.message)
    # a replay of either sends the same original headers
    assert original_headers(old_style_headers()) == original_headers(headers()) == ORIGINAL


def test_a_derived_events_letter_names_its_origin() -> None:
    std: list[tuple[str, bytes | None]] = [
        ("ce_id", b"derived"),
        ("ce_originid", b"raw-id"),
        ("ce_source", b"urn:databus:processor"),
    ]
    v = parse_dead_letter(DS, topic=DLQ, partition=0, offset=0, headers=headers(original=std))
    assert (v.event_id, v.origin_id) == ("derived", "raw-id")


def test_a_record_without_error_headers_still_parses() -> None:
    v = parse_dead_letter(DS, topic=DLQ, partition=0, offset=0, headers=None, timestamp_ms=0)
    assert (v.stage, v.reason, v.original, v.event_id) == ("unknown", "unknown", "?", "")
    assert v.timestamp is None and v.original_partition is None


def test_as_json_is_serializable_and_names_the_letter() -> None:
    out = view(offset=5).as_json()
    assert json.loads(json.dumps(out))["letter_id"] == f"{DLQ}:0:5"
    assert out["timestamp"].startswith("2025-10-09T")


def test_replay_headers_are_the_originals_plus_the_replay_mark() -> None:
    dlq = headers()
    assert original_headers(dlq) == ORIGINAL
    assert replay_headers(dlq, f"{DLQ}:0:7") == [*ORIGINAL, (REPLAY_HEADER, f"{DLQ}:0:7".encode())]
    # A letter that came from an earlier replay gets a fresh mark, not two.
    again = dlq_headers(
        replay_headers(dlq, f"{DLQ}:0:7"), topic="t", partition=0, offset=1, letter=LETTER
    )
    assert parse_dead_letter(DS, topic=DLQ, partition=0, offset=9, headers=again).replay_of == (
        f"{DLQ}:0:7"
    )
    marks = [k for k, _ in replay_headers(again, f"{DLQ}:0:9") if k == REPLAY_HEADER]
    assert marks == [REPLAY_HEADER]
    assert not any(k.startswith(HEADER_PREFIX) for k, _ in replay_headers(again, "x"))


def test_none_header_values_become_empty_bytes() -> None:
    assert original_headers([("a", None)]) == [("a", b"")]


def test_names_are_fully_masked() -> None:
    assert mask_value("applicant_name", NAME) == MASK
    assert mask_value("owner_name", "Công ty TNHH Một Thành Viên") == MASK


def test_identifiers_keep_only_their_last_two_characters_and_length() -> None:
    masked = mask_value("applicant_citizen_id", CITIZEN_ID)
    assert masked == f"{MASK}42 (12 chars)"
    assert CITIZEN_ID[:10] not in masked
    assert mask_value("reporter_phone", "+84905123456") == f"{MASK}56 (12 chars)"
    # too short to show any of it
    assert mask_value("citizen_id", "1234") == f"{MASK} (4 chars)"


def test_other_personal_fields_keep_only_a_length_class() -> None:
    # the exact length would give "MALE" and "FEMALE" away
    assert mask_value("applicant_sex", "MALE") == mask_value("applicant_sex", "FEMALE")
    assert mask_value("applicant_birth_date", "15/03/1990") == f"{MASK} (9-32 chars)"
    assert mask_value("applicant_birth_date", "") == f"{MASK} (empty)"
    assert mask_value("applicant_birth_date", None) is None


def test_mask_personal_masks_inside_the_envelope_and_leaves_the_rest() -> None:
    dossier = {
        "dossier_id": "HS-1",
        "applicant_citizen_id": CITIZEN_ID,
        "applicant_name": NAME,
        "applicant_birth_date": "15/03/1990",
        "applicant_sex": "FEMALE",
        "status": "COMPLETED",
    }
    envelope: dict[str, Any] = {
        "event_id": "e1",
        "op": "u",
        "before": dict(dossier),
        "after": dossier,
    }
    masked = mask_personal(envelope, DATASETS[DS].personal_fields)
    text = json.dumps(masked, ensure_ascii=False)
    assert CITIZEN_ID not in text and NAME not in text and "15/03/1990" not in text
    assert "FEMALE" not in text
    assert masked["after"]["dossier_id"] == "HS-1"
    assert masked["after"]["status"] == "COMPLETED"
    assert masked["before"]["applicant_name"] == MASK
    assert envelope["after"]["applicant_name"] == NAME  # the input is not changed


def test_mask_personal_walks_lists() -> None:
    masked = mask_personal([{"owner_name": "A"}, 3], ["owner_name"])
    assert masked == [{"owner_name": MASK}, 3]


def test_summarize_counts_by_dataset_stage_and_reason_largest_first() -> None:
    other = DeadLetter("decode", "bad_magic_byte", "bus.errors.CodecError", "magic byte 123")
    letters = [view(1), view(2), view(3, letter=other), view(4, dataset="land.parcels")]
    rows = summarize(letters)
    assert [(r.dataset, r.stage, r.reason, r.count) for r in rows] == [
        ("land.parcels", "standardize", "invalid_citizen_id", 1),
        (DS, "standardize", "invalid_citizen_id", 2),
        (DS, "decode", "bad_magic_byte", 1),
    ]


def test_latest_is_newest_first_and_bounded() -> None:
    letters = [view(1, ts_ms=1000), view(2, ts_ms=3000), view(3, ts_ms=2000), view(4, ts_ms=None)]
    assert [v.dlq_offset for v in latest(letters, 2)] == [2, 3]
    assert [v.dlq_offset for v in latest(letters, 10)] == [2, 3, 1, 4]
    assert latest(letters, 0) == []


def test_select_filters_and_orders_by_source_position() -> None:
    late = DeadLetter("standardize", "invalid_citizen_id", "E", "m", field="f")
    other = DeadLetter("decode", "bad_magic_byte", "E", "m")
    a = parse_dead_letter(
        DS,
        topic=DLQ,
        partition=1,
        offset=0,
        headers=dlq_headers([], topic="raw", partition=0, offset=50, letter=late),
    )
    b = parse_dead_letter(
        DS,
        topic=DLQ,
        partition=0,
        offset=1,
        headers=dlq_headers([], topic="raw", partition=0, offset=10, letter=late),
    )
    c = parse_dead_letter(
        DS,
        topic=DLQ,
        partition=0,
        offset=2,
        headers=dlq_headers([], topic="raw", partition=0, offset=20, letter=other),
    )
    assert select([a, b, c]) == [b, c, a]
    assert select([a, b, c], reason="invalid_citizen_id") == [b, a]
    assert select([a, b, c], stage="decode") == [c]
    assert select([a, b, c], offsets={0, 2}) == [c, a]
    assert select([a, b, c], offsets={0, 1}, partition=0) == [b]
    assert select([a, b, c], reason="nope") == []


def test_framing_hint_never_shows_content() -> None:
    hint = framing_hint(b'{"applicant_name": "Nguy\xe1\xbb\x85n"}')
    assert "JSON" in hint and "Nguy" not in hint and "0x7b" in hint
    assert framing_hint(None) == "the record has no value"
    assert "Avro framing byte" in framing_hint(b"\x00\x00\x00\x00\x01")


def test_next_step_depends_on_the_reason() -> None:
    assert "--offset 7" in next_step(view(7))
    codec = DeadLetter("decode", "bad_magic_byte", "E", "m")
    assert "send the event again" in next_step(view(1, letter=codec))
    unknown = DeadLetter("decode", "unknown_schema_id", "E", "m")
    assert "databus schemas register" in next_step(view(1, letter=unknown))
