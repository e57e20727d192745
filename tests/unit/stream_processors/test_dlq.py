"""Dead-letter headers: the originals kept, the error context added under Kafka
Connect's names (KIP-298/KIP-610) and the bus's own, read back old and new alike."""

from __future__ import annotations

from schemas.dead_letters import (
    CONNECT_PREFIX,
    HEADER_PREFIX,
    DeadLetter,
    dlq_headers,
    error_context,
)

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
CONTEXT_NAMES = [
    CONNECT_PREFIX + "topic",
    CONNECT_PREFIX + "partition",
    CONNECT_PREFIX + "offset",
    CONNECT_PREFIX + "connector.name",
    CONNECT_PREFIX + "task.id",
    CONNECT_PREFIX + "stage",
    CONNECT_PREFIX + "class.name",
    CONNECT_PREFIX + "exception.class.name",
    CONNECT_PREFIX + "exception.message",
    HEADER_PREFIX + "stage",
    HEADER_PREFIX + "reason",
    HEADER_PREFIX + "field",
    HEADER_PREFIX + "exception.message.vi",
]


def headers(
    original: list[tuple[str, bytes]] | list[tuple[str, bytes | None]] = ORIGINAL,
) -> list[tuple[str, bytes]]:
    return dlq_headers(
        original,
        topic="publicservice.dossiers.raw.v1",
        partition=3,
        offset=12345,
        letter=LETTER,
        time_ms=0,
    )


def context_of(result: list[tuple[str, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in result:
        if key.startswith((HEADER_PREFIX, CONNECT_PREFIX)):
            assert key not in out, f"{key} appears twice"
            out[key] = value.decode("utf-8")
    return out


def test_original_headers_come_first_unchanged_and_in_order() -> None:
    result = headers()
    assert result[: len(ORIGINAL)] == ORIGINAL
    assert [k for k, _ in result[len(ORIGINAL) :]] == CONTEXT_NAMES


def test_error_context_under_connects_names_and_the_bus_own() -> None:
    assert context_of(headers()) == {
        "__connect.errors.topic": "publicservice.dossiers.raw.v1",
        "__connect.errors.partition": "3",
        "__connect.errors.offset": "12345",
        "__connect.errors.connector.name": "databus-processor",
        "__connect.errors.task.id": "0",
        "__connect.errors.stage": "TRANSFORMATION",
        "__connect.errors.class.name": "stream_processors.pipeline.DatasetPipeline",
        "__connect.errors.exception.class.name": "bus.errors.ValidationError",
        "__connect.errors.exception.message": "citizen id has 11 digits, expected 12 (or 9)",
        "databus.errors.stage": "standardize",
        "databus.errors.reason": "invalid_citizen_id",
        "databus.errors.field": "applicant_citizen_id",
        "databus.errors.exception.message.vi": (
            "Số định danh cá nhân có 11 chữ số, cần 12 (hoặc 9)"
        ),
    }


def test_connect_stage_per_bus_stage() -> None:
    def stage(letter: DeadLetter) -> tuple[str, str]:
        got = dict(dlq_headers([], topic="t", partition=0, offset=0, letter=letter))
        return (
            got[CONNECT_PREFIX + "stage"].decode(),
            got[CONNECT_PREFIX + "connector.name"].decode(),
        )

    def letter(stage: str, exception_class: str = "X") -> DeadLetter:
        return DeadLetter(stage=stage, reason="r", exception_class=exception_class, message="m")

    assert stage(letter("decode", "CodecError")) == ("VALUE_CONVERTER", "databus-processor")
    assert stage(letter("encode")) == ("VALUE_CONVERTER", "databus-processor")
    assert stage(letter("dedup")) == ("TRANSFORMATION", "databus-processor")
    assert stage(letter("produce")) == ("KAFKA_PRODUCE", "databus-processor")
    assert stage(letter("sink:fhir")) == ("TASK_PUT", "sink.fhir")
    assert stage(letter("sink:fhir", "CodecError")) == ("VALUE_CONVERTER", "sink.fhir")


def test_all_values_are_bytes_and_vietnamese_is_utf8() -> None:
    result = headers()
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in result)
    vi = dict(result)[HEADER_PREFIX + "exception.message.vi"]
    assert vi == "Số định danh cá nhân có 11 chữ số, cần 12 (hoặc 9)".encode()


def test_stale_error_headers_old_and_new_are_replaced_not_duplicated() -> None:
    # A record re-driven from the DLQ arrives with the previous failure's headers.
    stale = [
        *ORIGINAL,
        (HEADER_PREFIX + "reason", b"unknown_admin_unit"),
        (HEADER_PREFIX + "offset", b"7"),
        (HEADER_PREFIX + "exception.message.vi", None),
        (HEADER_PREFIX + "something.old", b"x"),
        (CONNECT_PREFIX + "offset", b"8"),
    ]
    result = headers(stale)
    context = context_of(result)  # raises on a duplicate key
    assert context[HEADER_PREFIX + "reason"] == "invalid_citizen_id"
    assert context[CONNECT_PREFIX + "offset"] == "12345"
    assert HEADER_PREFIX + "something.old" not in context
    assert HEADER_PREFIX + "offset" not in context
    assert result[: len(ORIGINAL)] == ORIGINAL
    assert len(result) == len(ORIGINAL) + len(CONTEXT_NAMES)


def test_similar_but_foreign_prefixes_are_kept() -> None:
    original: list[tuple[str, bytes | None]] = [
        ("databus.errorsX", b"1"),
        ("databus.error.reason", b"2"),
        ("DATABUS", b"3"),
    ]
    assert headers(original)[:3] == original


def test_no_original_headers_get_a_cloudevent_of_their_own() -> None:
    letter = DeadLetter(
        stage="decode", reason="bad_magic_byte", exception_class="CodecError", message="m"
    )
    result = dlq_headers([], topic="t", partition=0, offset=0, letter=letter, time_ms=0)
    got = dict(result)
    assert got["ce_specversion"] == b"1.0"
    assert got["ce_source"] == b"urn:databus:processor"
    assert got["ce_type"] == b"vn.gov.databus.deadletter"
    assert got["ce_time"] == b"1970-01-01T00:00:00.000Z"
    assert got["content-type"] == b"application/octet-stream"
    again = dict(dlq_headers([], topic="t", partition=0, offset=0, letter=letter, time_ms=5))
    other = dict(dlq_headers([], topic="t", partition=0, offset=1, letter=letter, time_ms=0))
    assert again["ce_id"] == got["ce_id"] != other["ce_id"]  # from the coordinates
    context = context_of(result)
    assert context[HEADER_PREFIX + "field"] == "" == context[HEADER_PREFIX + "exception.message.vi"]
    assert context[CONNECT_PREFIX + "partition"] == "0" == context[CONNECT_PREFIX + "offset"]


def test_a_partial_cloudevent_is_completed_keeping_what_it_has() -> None:
    result = headers([("ce_id", b"abc"), ("flag", None)])
    assert result[:2] == [("ce_id", b"abc"), ("flag", b"")]
    got = dict(result)
    assert got["ce_id"] == b"abc"
    assert got["ce_source"] == b"urn:databus:processor"
    assert [k for k, _ in result].count("ce_id") == 1


def test_error_context_reads_new_letters() -> None:
    context = error_context(headers())
    assert context["topic"] == "publicservice.dossiers.raw.v1"
    assert (context["partition"], context["offset"]) == ("3", "12345")
    assert context["stage"] == "standardize"
    assert context["connect.stage"] == "TRANSFORMATION"
    assert context["reason"] == "invalid_citizen_id"
    assert context["exception.class.name"] == "bus.errors.ValidationError"
    assert context["exception.message"].startswith("citizen id")
    assert context["connector.name"] == "databus-processor"


def test_error_context_reads_old_letters() -> None:
    # What dlq_headers wrote before the Connect names: everything under databus.errors.
    old = [
        *ORIGINAL,
        *(
            (HEADER_PREFIX + k, v.encode())
            for k, v in {
                "topic": "publicservice.dossiers.raw.v1",
                "partition": "3",
                "offset": "12345",
                "stage": "standardize",
                "reason": "invalid_citizen_id",
                "field": "applicant_citizen_id",
                "exception.class.name": "bus.errors.ValidationError",
                "exception.message": "citizen id has 11 digits",
                "exception.message.vi": "Số định danh",
            }.items()
        ),
    ]
    context = error_context(old)
    assert context["topic"] == "publicservice.dossiers.raw.v1"
    assert (context["partition"], context["offset"]) == ("3", "12345")
    assert (context["stage"], context["reason"]) == ("standardize", "invalid_citizen_id")
    assert context["exception.class.name"] == "bus.errors.ValidationError"
    assert context["exception.message"] == "citizen id has 11 digits"
    assert context["exception.message.vi"] == "Số định danh"
    assert "connect.stage" not in context
