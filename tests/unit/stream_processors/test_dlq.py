"""Dead-letter headers: the originals kept, the error context added (Kafka Connect style)."""

from __future__ import annotations

from schemas.dead_letters import HEADER_PREFIX, DeadLetter, dlq_headers

ORIGINAL = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"7f1c3a52-0b1e-4d0e-9a43-3d4a1f2c9e11"),
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


def headers(
    original: list[tuple[str, bytes]] | list[tuple[str, bytes | None]] = ORIGINAL,
) -> list[tuple[str, bytes]]:
    return dlq_headers(
        original, topic="publicservice.dossiers.raw.v1", partition=3, offset=12345, letter=LETTER
    )


def errors_of(result: list[tuple[str, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in result:
        if key.startswith(HEADER_PREFIX):
            name = key.removeprefix(HEADER_PREFIX)
            assert name not in out, f"{key} appears twice"
            out[name] = value.decode("utf-8")
    return out


def test_original_headers_come_first_unchanged_and_in_order() -> None:
    result = headers()
    assert result[: len(ORIGINAL)] == ORIGINAL
    assert [k for k, _ in result[len(ORIGINAL) :]] == [
        HEADER_PREFIX + k
        for k in (
            "topic",
            "partition",
            "offset",
            "stage",
            "reason",
            "field",
            "exception.class.name",
            "exception.message",
            "exception.message.vi",
        )
    ]


def test_error_context() -> None:
    assert errors_of(headers()) == {
        "topic": "publicservice.dossiers.raw.v1",
        "partition": "3",
        "offset": "12345",
        "stage": "standardize",
        "reason": "invalid_citizen_id",
        "field": "applicant_citizen_id",
        "exception.class.name": "bus.errors.ValidationError",
        "exception.message": "citizen id has 11 digits, expected 12 (or 9)",
        "exception.message.vi": "Số định danh cá nhân có 11 chữ số, cần 12 (hoặc 9)",
    }


def test_all_values_are_bytes_and_vietnamese_is_utf8() -> None:
    result = headers()
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in result)
    vi = dict(result)[HEADER_PREFIX + "exception.message.vi"]
    assert vi == "Số định danh cá nhân có 11 chữ số, cần 12 (hoặc 9)".encode()


def test_stale_error_headers_are_replaced_not_duplicated() -> None:
    # A record re-driven from the DLQ arrives with the previous failure's headers.
    stale = [
        *ORIGINAL,
        (HEADER_PREFIX + "reason", b"unknown_admin_unit"),
        (HEADER_PREFIX + "offset", b"7"),
        (HEADER_PREFIX + "exception.message.vi", None),
        (HEADER_PREFIX + "something.old", b"x"),
    ]
    result = headers(stale)
    errors = errors_of(result)  # raises on a duplicate key
    assert errors["reason"] == "invalid_citizen_id"
    assert errors["offset"] == "12345"
    assert "something.old" not in errors
    assert result[: len(ORIGINAL)] == ORIGINAL
    assert len(result) == len(ORIGINAL) + 9


def test_similar_but_foreign_prefixes_are_kept() -> None:
    original = [("databus.errorsX", b"1"), ("databus.error.reason", b"2"), ("DATABUS", b"3")]
    assert headers(original)[:3] == original


def test_no_original_headers_and_empty_optional_fields() -> None:
    letter = DeadLetter(
        stage="decode", reason="bad_magic_byte", exception_class="CodecError", message="m"
    )
    result = dlq_headers([], topic="t", partition=0, offset=0, letter=letter)
    errors = errors_of(result)
    assert len(result) == 9
    assert errors["field"] == "" and errors["exception.message.vi"] == ""
    assert errors["partition"] == "0" and errors["offset"] == "0"


def test_a_header_without_value_is_kept() -> None:
    result = headers([("ce_id", b"abc"), ("flag", None)])
    assert [k for k, _ in result[:2]] == ["ce_id", "flag"]
