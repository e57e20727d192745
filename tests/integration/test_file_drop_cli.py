"""`databus publish` / `databus template` as a unit runs them, against the real broker
and registry: valid rows reach the raw topic, rejected rows land in a reject file,
and the exit status tells which happened."""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from databus_cli import run_databus
from openpyxl import Workbook
from registry_clients import registry_client

from schemas.catalog import DOSSIERS
from schemas.codec import AvroDeserializer
from schemas.domain.citizen_id import make_citizen_id
from schemas.models.public_service import Dossier

pytestmark = pytest.mark.integration

FIELDS = list(Dossier.model_fields)
TOPIC = DOSSIERS.raw_topic


def _bus_env(kafka_bootstrap: str, registry_url: str) -> dict[str, str]:
    # DATABUS_REDIS__URL is dropped with every other DATABUS_* variable by _env
    return {
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "DATABUS_SCHEMA_REGISTRY__URL": registry_url,
    }


def _row(prefix: str, serial: int) -> dict[str, str]:
    return {
        "dossier_id": f"{prefix}-{serial}",
        "dossier_code": f"000.00.{serial:02d}.H75",
        "procedure_code": "1.001234",
        "procedure_name": "Cấp giấy phép xây dựng",
        "receiving_unit_code": "DNA.STP",
        "admin_unit_code": "75001",
        "applicant_citizen_id": make_citizen_id("075", 1990, "FEMALE", serial),
        "applicant_name": "Nguyễn Thị Hoa",
        "applicant_birth_date": "15/03/1990",
        "applicant_sex": "FEMALE",
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": "01/07/2025 08:30",
        "due_at": "10/07/2025",
        "completed_at": "",
    }


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        writer.writerows([[r[f] for f in FIELDS] for r in rows])
    return path


def _consume_all(bootstrap: str, registry_url: str, prefix: str) -> list[dict[str, Any]]:
    """Every record of the raw topic from the beginning, decoded, whose dossier id
    carries ``prefix``: read until each partition reports its end (counted, not
    inferred from watermarks, which the embedded broker reports wrong)."""
    decode = AvroDeserializer(registry_client({"url": registry_url}))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"filedrop-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 6000,
        }
    )
    found: list[dict[str, Any]] = []
    try:
        partitions = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
        consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in partitions])
        pending = set(partitions)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if (err := msg.error()) is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err
                pending.discard(msg.partition())
                continue
            event = decode(msg.value(), None)
            after = event.get("after") or {}
            if str(after.get("dossier_id", "")).startswith(prefix):
                found.append(event)
        assert not pending, f"partitions {sorted(pending)} not read to the end within 60 s"
    finally:
        consumer.close()
    return found


def test_publish_sends_good_rows_and_writes_the_rest_to_a_reject_file(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    prefix = f"FD-{uuid.uuid4().hex[:12]}"
    good = [_row(prefix, i) for i in range(1, 6)]
    bad = [
        {**_row(prefix, 6), "received_at": "31/02/2025"},
        {**_row(prefix, 7), "status": "DONE"},
        {**_row(prefix, 8), "applicant_name": ""},
    ]
    # bad rows in between good ones: line numbers must follow the file
    rows = [good[0], bad[0], good[1], good[2], bad[1], good[3], bad[2], good[4]]
    path = _write_csv(tmp_path / "dossiers.csv", rows)

    done = run_databus(
        tmp_path,
        "publish",
        "--dataset",
        DOSSIERS.id,
        str(path),
        **_bus_env(kafka_bootstrap, registry_url),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = " ".join(done.stdout.split())  # rich may wrap long lines
    assert "5 of 8 rows published" in out
    reject_path = tmp_path / "dossiers.rejects.csv"
    assert reject_path.name in out
    assert "3 rows rejected" in out

    with reject_path.open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [(int(r["line"]), r["field"]) for r in table] == [
        (3, "received_at"),
        (6, "status"),
        (8, "applicant_name"),
    ]
    assert all(r["reason_en"] and r["reason_vi"] for r in table)
    assert [r["dossier_id"] for r in table] == [r["dossier_id"] for r in bad]

    events = _consume_all(kafka_bootstrap, registry_url, prefix)
    assert sorted(e["after"]["dossier_id"] for e in events) == sorted(r["dossier_id"] for r in good)
    assert all(e["op"] == "r" for e in events)


def test_a_clean_file_exits_zero_without_a_reject_file(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    prefix = f"FD-{uuid.uuid4().hex[:12]}"
    path = _write_csv(tmp_path / "clean.csv", [_row(prefix, i) for i in range(1, 4)])
    done = run_databus(
        tmp_path,
        "publish",
        "--dataset",
        DOSSIERS.id,
        str(path),
        **_bus_env(kafka_bootstrap, registry_url),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 of 3 rows published" in " ".join(done.stdout.split())
    assert not (tmp_path / "clean.rejects.csv").exists()
    assert not list(tmp_path.glob("*.rejects.csv"))


def test_publish_without_settings_names_the_variables(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "d.csv", [_row("FD-nosettings", 1)])
    done = run_databus(tmp_path, "publish", "--dataset", DOSSIERS.id, str(path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""  # errors go to stderr
    out = " ".join(done.stderr.split())
    assert "DATABUS_KAFKA__BOOTSTRAP_SERVERS" in out
    assert "DATABUS_SCHEMA_REGISTRY__URL" in out
    assert not list(tmp_path.glob("*.rejects.csv"))


def test_an_unusable_file_exits_two_and_publishes_nothing(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*FIELDS, "ghi_chu"])
        writer.writerow([*_row("FD-extra", 1).values(), "x"])
    done = run_databus(
        tmp_path,
        "publish",
        "--dataset",
        DOSSIERS.id,
        str(path),
        **_bus_env(kafka_bootstrap, registry_url),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ghi_chu" in done.stderr


def test_template_writes_the_expected_header(tmp_path: Path) -> None:
    target = tmp_path / "X.csv"
    done = run_databus(tmp_path, "template", "--dataset", DOSSIERS.id, "--out", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    with target.open(newline="", encoding="utf-8") as fh:
        header, example = list(csv.reader(fh))
    assert header == FIELDS
    assert len(example) == len(FIELDS)


def test_template_for_an_unknown_dataset_names_the_known_ones(tmp_path: Path) -> None:
    done = run_databus(tmp_path, "template", "--dataset", "no.such.dataset", "--out", "x.csv")
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join(done.stderr.split())  # errors go to stderr
    assert DOSSIERS.id in out
    assert not (tmp_path / "x.csv").exists()


def _xlsx_bytes(rows: list[list[str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def _good_values() -> list[str]:
    return list(_row("FD-bad", 1).values())


_LONG = [_good_values()[0], "x" * 131_073, *_good_values()[2:]]
_VALID_XLSX = _xlsx_bytes([FIELDS, _good_values()])

# file name → (its bytes, or None for "do not create", the message on stderr)
BAD_FILES: dict[str, tuple[bytes | None, str]] = {
    "empty.xlsx": (b"", "empty.xlsx: not a readable Excel workbook"),
    "corrupt.xlsx": (_VALID_XLSX[: len(_VALID_XLSX) // 2], "corrupt.xlsx: not a readable Excel"),
    "no-rows.xlsx": (_xlsx_bytes([FIELDS]), "no-rows.xlsx: no rows to publish"),
    "long-field.csv": (
        _csv_bytes([FIELDS, _good_values(), _LONG]),
        "long-field.csv, line 3: a value longer than 131072 characters",
    ),
    "empty.csv": (b"", "empty.csv: empty file: no header row"),
    "latin1.csv": (
        ("tên," + ",".join(FIELDS) + "\n").encode("latin-1"),
        "latin1.csv, line 1: the header is not UTF-8 text",
    ),
    "wrong-header.csv": (
        _csv_bytes([["ma_ho_so", *FIELDS[1:]], _good_values()]),
        "wrong-header.csv: unknown column(s) 'ma_ho_so'",
    ),
    "twice.csv": (
        _csv_bytes([[*FIELDS, "Dossier ID"], [*_good_values(), "x"]]),
        "twice.csv, line 1: column 'Dossier ID' appears twice",
    ),
    "missing-column.csv": (
        _csv_bytes([FIELDS[1:], _good_values()[1:]]),
        "missing-column.csv: missing required column(s) dossier_id",
    ),
    "nothing.jsonl": (b"\n\n", "nothing.jsonl: no rows to publish"),
    "table.jsonl": (
        _csv_bytes([FIELDS, _good_values()]),
        "table.jsonl: not JSON Lines, no line is a JSON object (line 1: not valid JSON",
    ),
    "utf16.csv": (",".join(FIELDS).encode("utf-16"), "utf16.csv: not UTF-8 text"),
    "unknown-key.ndjson": (
        json.dumps({"ma_ho_so": "1"}).encode(),
        "unknown-key.ndjson, line 1: unknown column(s) 'ma_ho_so'",
    ),
    "dossiers.xls": (b"\xd0\xcf\x11\xe0", "unsupported file type '.xls'"),
    "absent.csv": (None, "absent.csv: no such file"),
    "folder.csv": (None, "folder.csv: is a directory, not a file"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_a_bad_file_exits_two_with_one_line_naming_it(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str, name: str
) -> None:
    data, message = BAD_FILES[name]
    path = tmp_path / name
    if name == "folder.csv":
        path.mkdir()
    elif data is not None:
        path.write_bytes(data)
    done = run_databus(
        tmp_path,
        "publish",
        "--dataset",
        DOSSIERS.id,
        str(path),
        **_bus_env(kafka_bootstrap, registry_url),
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("databus publish: ")
    assert message in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(tmp_path.glob("*.rejects.csv"))


def test_bad_json_lines_are_rejected_rows_with_exit_one(
    tmp_path: Path, kafka_bootstrap: str, registry_url: str
) -> None:
    """Lines that are not JSON objects are rows like any other: reported with their
    line in the reject file, the rest published, exit 1."""
    prefix = f"FD-{uuid.uuid4().hex[:12]}"
    good = [json.dumps(_row(prefix, i), ensure_ascii=False) for i in (1, 2)]
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "\n".join([good[0], "[" * 100_000 + "]" * 100_000, "{not json", good[1]]) + "\n",
        encoding="utf-8",
    )
    done = run_databus(
        tmp_path,
        "publish",
        "--dataset",
        DOSSIERS.id,
        str(path),
        **_bus_env(kafka_bootstrap, registry_url),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 of 4 rows published" in " ".join(done.stdout.split())
    with (tmp_path / "mixed.rejects.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [(int(r["line"]), r["reason_en"].split(":")[0]) for r in table] == [
        (2, "not a JSON object"),
        (3, "not valid JSON"),
    ]
