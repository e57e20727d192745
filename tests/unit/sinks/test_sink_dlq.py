"""Dead letters of a sink: the same header vocabulary as the processor's DLQ."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as SettingsInvalid

from bus.errors import CodecError
from bus.settings import Settings, SinkSettings
from schemas.dead_letters import CONNECT_PREFIX, HEADER_PREFIX, dlq_headers
from schemas.topics import sink_dlq_spec, sink_dlq_topic
from sinks.base import Rejected, SinkRecord
from sinks.sink_dlq import rejected_letter, undecodable_letter

RECORD = SinkRecord(
    "health.dossiers.std.v1", 2, 41, b"k", {"id": "x"}, b"\x00raw", (("ce_id", b"e1"),)
)


def test_the_sink_dlq_topic_follows_the_topic_convention() -> None:
    assert sink_dlq_topic("ioc_store") == "sink.ioc_store.dlq.v1"
    spec = sink_dlq_spec(Settings(), "ioc_store")
    assert spec.name == "sink.ioc_store.dlq.v1"
    assert spec.retention_ms > 0


def test_a_rejection_becomes_a_letter_of_the_sinks_stage_in_two_languages() -> None:
    letter = rejected_letter("health_axis", Rejected(RECORD, "http_4xx", "HTTP 422", "HTTPError"))
    assert letter.stage == "sink:health_axis"
    assert (letter.reason, letter.exception_class, letter.message) == (
        "http_4xx",
        "HTTPError",
        "HTTP 422",
    )
    assert letter.message_vi
    unknown = rejected_letter("x", Rejected(RECORD, "odd_code", "no"))
    assert unknown.exception_class == "Rejected"
    assert unknown.message_vi


def test_an_undecodable_record_keeps_the_codecs_reason() -> None:
    letter = undecodable_letter("ioc_store", CodecError("bad_magic_byte", "magic byte 1"))
    assert letter.stage == "sink:ioc_store"
    assert letter.reason == "bad_magic_byte"
    assert letter.exception_class == "CodecError"
    assert letter.message == "magic byte 1"
    assert letter.message_vi


def test_headers_carry_the_origin_and_keep_the_originals() -> None:
    letter = rejected_letter("s", Rejected(RECORD, "db_rejected", "constraint"))
    headers = dict(
        dlq_headers(
            RECORD.headers,
            topic=RECORD.topic,
            partition=RECORD.partition,
            offset=RECORD.offset,
            letter=letter,
        )
    )
    assert headers["ce_id"] == b"e1"
    assert headers[CONNECT_PREFIX + "offset"] == b"41"
    assert headers[CONNECT_PREFIX + "connector.name"] == b"sink.s"
    assert headers[CONNECT_PREFIX + "stage"] == b"TASK_PUT"
    assert headers[HEADER_PREFIX + "stage"] == b"sink:s"


def test_sink_settings_are_validated() -> None:
    assert Settings().sink == SinkSettings()
    with pytest.raises(SettingsInvalid, match="BACKOFF_MAX_S"):
        SinkSettings(backoff_initial_s=5, backoff_max_s=1)
    for bad in ({"backoff_initial_s": 0}, {"breaker_fail_max": 0}, {"batch_size": -1}):
        with pytest.raises(SettingsInvalid):
            SinkSettings(**bad)


def test_sink_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_SINK__BACKOFF_MAX_S", "2.5")
    monkeypatch.setenv("DATABUS_SINK__BREAKER_FAIL_MAX", "7")
    sink = Settings().sink
    assert (sink.backoff_max_s, sink.breaker_fail_max) == (2.5, 7)


def test_a_digest_letter_carries_coordinates_size_and_sha256_but_no_bytes() -> None:
    import hashlib

    from sinks.sink_dlq import SinkLetter, digest_headers

    raw = b"x" * 2_000_000
    original = (("h", b"y" * 500_000), ("ce_id", b"std-1"), ("ce_source", b"urn:databus:processor"))
    big = SinkRecord("land.parcels.std.v1", 1, 7, b"k", {}, raw, original)
    letter = rejected_letter("shared_repo", Rejected(big, "db_rejected", "m" * 5000))
    headers = dict(digest_headers(SinkLetter(big, letter)))
    assert headers[CONNECT_PREFIX + "topic"] == b"land.parcels.std.v1"
    assert (headers[CONNECT_PREFIX + "partition"], headers[CONNECT_PREFIX + "offset"]) == (
        b"1",
        b"7",
    )
    assert headers[HEADER_PREFIX + "reason"] == b"db_rejected"
    assert headers[HEADER_PREFIX + "original.size"] == b"2000000"
    assert headers[HEADER_PREFIX + "original.sha256"] == hashlib.sha256(raw).hexdigest().encode()
    assert "h" not in headers  # the original headers are left out, but its event's
    assert (headers["ce_id"], headers["ce_source"]) == (b"std-1", b"urn:databus:processor")
    assert sum(len(k) + len(v) for k, v in headers.items()) < 5000
