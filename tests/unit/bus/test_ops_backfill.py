"""``databus backfill``'s producer side: the header on every event, each row's own time.

The BackfillPublisher is built against closed ports (librdkafka connects lazily); its
events are encoded with its headers by an ``EventEncoder`` with a known schema id (the
registry is never asked), as in test_publisher_encode.py.
"""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.settings import load_settings
from producers.backfill import BACKFILL_HEADER, BackfillPublisher, event_time, publish_backfill
from producers.file_drop import template_rows
from producers.publisher import EventEncoder, Publisher
from schemas.catalog import DOSSIERS, load_schema
from schemas.codec import unframe
from schemas.models.common import Op
from schemas.models.public_service import Dossier

NOW = datetime(2025, 10, 20, 3, 0, tzinfo=UTC)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def publisher() -> Iterator[BackfillPublisher]:
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"},
        schema_registry={"url": url},
    )
    registry = SchemaRegistryClient({"url": url, "max.retries": 0, "retries.wait.ms": 1})
    pub = BackfillPublisher(settings, source_system="backfill", registry=registry)
    yield pub
    pub.close(timeout=1)
    registry.close()


def dossier(**changes: Any) -> Dossier:
    header, example = template_rows(Dossier)
    return Dossier.model_validate({**dict(zip(header, example, strict=True)), **changes})


def test_every_event_carries_the_header_and_its_own_time(publisher: BackfillPublisher) -> None:
    assert publisher.extra_headers == ((BACKFILL_HEADER, b"1"),)
    encoder = EventEncoder(
        DOSSIERS,
        publisher.encoder(DOSSIERS).serializer,
        source_system="backfill",
        max_bytes=1_000_000,
        extra_headers=publisher.extra_headers,
        schema_id=42,  # as if registered
    )
    at = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    key, value, headers, event_id = encoder.encode(dossier(), version=7, op=Op.READ, changed_at=at)
    assert headers[-1] == (BACKFILL_HEADER, b"1")
    assert [k for k, _ in headers].count(BACKFILL_HEADER) == 1
    assert ("ce_id", event_id.encode()) in headers  # the CloudEvents headers stay
    schema = fastavro.parse_schema(json.loads(load_schema(DOSSIERS.raw_schema)))
    _, body = unframe(value)
    envelope = cast(dict[str, Any], fastavro.schemaless_reader(io.BytesIO(body), schema, schema))
    assert envelope["source"]["ts_ms"] == at
    assert envelope["source"]["version"] == 7
    assert key == b"HS-STP-000001"


def test_event_time_is_the_newest_field_set_else_as_of() -> None:
    done = dossier(received_at="01/07/2025 08:30", completed_at="03/07/2025 10:15")
    local_10_15 = datetime(2025, 7, 3, 3, 15, tzinfo=UTC)  # 10:15 in Asia/Ho_Chi_Minh
    assert event_time(done, ["received_at", "completed_at"], None) == local_10_15
    assert event_time(done, ["completed_at", "received_at"], None) == local_10_15
    open_ = dossier(received_at="01/07/2025 08:30", completed_at=None, status="RECEIVED")
    assert event_time(open_, ["completed_at"], NOW) == NOW
    assert event_time(open_, ["completed_at"], None) is None
    assert event_time(open_, ["completed_at", "received_at"], None) == datetime(
        2025, 7, 1, 1, 30, tzinfo=UTC
    )


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, datetime | None, int, Op]] = []
        self.flushed = False

    def publish(
        self, dataset: Any, after: Dossier, *, version: int, op: Op, changed_at: datetime | None
    ) -> str:
        self.sent.append((after.dossier_id, changed_at, version, op))
        return "id"

    def flush(self) -> None:
        self.flushed = True


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    header, example = template_rows(Dossier)
    base = dict(zip(header, example, strict=True))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for row in rows:
            writer.writerow({**base, **row})


def test_rows_without_a_time_or_from_the_future_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_csv(
        path,
        [
            {"dossier_id": "A", "status": "COMPLETED", "completed_at": "03/07/2025 10:15"},
            {"dossier_id": "B", "status": "RECEIVED", "completed_at": ""},
            {"dossier_id": "C", "status": "COMPLETED", "completed_at": "03/07/2031 10:15"},
            {"dossier_id": "D", "status": "NOT_A_STATUS"},
        ],
    )
    fake = FakePublisher()
    result = publish_backfill(
        cast(Publisher, fake), DOSSIERS, path, time_fields=["completed_at"], now=NOW
    )
    assert (result.rows, result.published) == (4, 1)
    assert [s[0] for s in fake.sent] == ["A"]
    assert fake.sent[0][1] == datetime(2025, 7, 3, 3, 15, tzinfo=UTC)
    assert fake.sent[0][3] is Op.READ
    assert fake.flushed
    assert [(r.line, r.field) for r in result.rejects] == [
        (3, "completed_at"),
        (4, "completed_at"),
        (5, "status"),
    ]
    assert "no event time" in result.rejects[0].reason_en
    assert "future" in result.rejects[1].reason_en
    assert result.reject_path == tmp_path / "history.rejects.csv"
    assert result.reject_path.exists()


def test_as_of_dates_rows_without_a_time(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_csv(path, [{"dossier_id": "B", "status": "RECEIVED", "completed_at": ""}])
    fake = FakePublisher()
    as_of = NOW - timedelta(days=30)
    result = publish_backfill(
        cast(Publisher, fake), DOSSIERS, path, time_fields=["completed_at"], as_of=as_of, now=NOW
    )
    assert result.published == 1 and fake.sent[0][1] == as_of


def test_an_unknown_time_field_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    write_csv(path, [{"dossier_id": "A"}])
    fake = FakePublisher()
    with pytest.raises(ValueError, match="no field"):
        publish_backfill(cast(Publisher, fake), DOSSIERS, path, time_fields=["finished"])
    assert fake.sent == []
