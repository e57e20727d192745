"""One lifecycle for every rule: raised once, updated sparingly, resolved when clear."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import pytest

from schemas.catalog import ALERTS_SCHEMA, schema_revisions
from schemas.evolution import check_revisions
from stream_processors.alerts.lifecycle import Condition, Status, decide, open_alert_key

ROOT = Path(__file__).resolve().parents[3]
AVRO = ROOT / "schemas" / "avro"
MIN = 60_000
T0 = 1_754_000_000_000

BASE = Condition(
    rule="dossier_overdue_rate",
    status="firing",
    severity="WARNING",
    dataset="publicservice.dossiers",
    subject_kind="unit",
    subject="DNA.SYT",
    unit_code="DNA.SYT",
    value=0.4,
    threshold=0.3,
    clear_threshold=0.25,
    window="30d",
    window_days=30,
    window_start_ms=T0 - 30 * 86_400_000,
    window_end_ms=T0,
    evidence={"completed_on_time": 6, "completed_late": 3, "open_overdue": 1},
    message_vi="Đơn vị DNA.SYT: tỷ lệ hồ sơ quá hạn 40%",
    message_en="Unit DNA.SYT: overdue rate 40%",
    material_change=0.05,
    min_update_interval_ms=15 * MIN,
)


def cond(status: Status = "firing", **kw: Any) -> Condition:
    return replace(BASE, status=status, **kw)


def run(conditions: list[tuple[int, Condition]]) -> list[dict[str, Any]]:
    state: dict[str, Any] | None = None
    records = []
    for now, c in conditions:
        state, record = decide(state, c, now)
        if record is not None:
            records.append(record)
    return records


def test_firing_raises_once_with_a_stable_id() -> None:
    records = run([(T0 + i * MIN, cond()) for i in range(10)])
    assert [r["state"] for r in records] == ["RAISED"]
    assert records[0]["alert_id"] == f"dossier_overdue_rate:DNA.SYT:{T0}"


def test_holding_or_clear_raise_nothing() -> None:
    assert decide(None, cond("holding"), T0) == (None, None)
    assert decide(None, cond("clear"), T0) == (None, None)


def test_clear_resolves_and_a_later_raise_gets_a_new_id() -> None:
    records = run([(T0, cond()), (T0 + MIN, cond("clear")), (T0 + 2 * MIN, cond())])
    assert [r["state"] for r in records] == ["RAISED", "RESOLVED", "RAISED"]
    assert records[0]["alert_id"] == records[1]["alert_id"] != records[2]["alert_id"]
    assert records[1]["severity"] == "INFO"


def test_holding_keeps_the_alert_open() -> None:
    records = run([(T0, cond()), *[(T0 + i * MIN, cond("holding")) for i in range(1, 50)]])
    assert [r["state"] for r in records] == ["RAISED"]


def test_severity_rise_updates_at_once() -> None:
    records = run([(T0, cond()), (T0 + MIN, cond(severity="CRITICAL", value=0.41))])
    assert [(r["state"], r["severity"]) for r in records] == [
        ("RAISED", "WARNING"),
        ("UPDATED", "CRITICAL"),
    ]


def test_value_change_updates_only_when_material_and_not_too_often() -> None:
    records = run(
        [
            (T0, cond(value=0.40)),
            (T0 + MIN, cond(value=0.44)),  # not material
            (T0 + 2 * MIN, cond(value=0.50)),  # material, but too soon
            (T0 + 16 * MIN, cond(value=0.50)),  # material and due
            (T0 + 40 * MIN, cond(value=0.52)),  # due, not material vs 0.50
        ]
    )
    assert [(r["state"], r["value"]) for r in records] == [("RAISED", 0.4), ("UPDATED", 0.5)]


def test_zero_material_change_means_severity_only() -> None:
    records = run(
        [(T0, cond(material_change=0.0)), (T0 + 60 * MIN, cond(value=0.9, material_change=0.0))]
    )
    assert [r["state"] for r in records] == ["RAISED"]


def test_flapping_input_makes_no_storm() -> None:
    # A value bouncing across the raise threshold inside the band: holding/firing
    # alternate; a severity bouncing between levels every minute for two hours.
    seq: list[tuple[int, Condition]] = []
    for i in range(120):
        status: Status = "firing" if i % 2 else "holding"
        severity = "CRITICAL" if i % 3 == 0 else "WARNING"
        seq.append((T0 + i * MIN, cond(status, severity=severity, value=0.3 + (i % 2) * 0.3)))
    records = run(seq)
    assert records[0]["state"] == "RAISED"
    assert all(r["state"] == "UPDATED" for r in records[1:])
    # escalations are immediate, everything else at most every 15 minutes
    assert len(records) <= 1 + 2 * (120 // 15 + 1)
    assert len({r["alert_id"] for r in records}) == 1


def test_record_carries_rule_subject_evidence_and_messages() -> None:
    (record,) = run([(T0, cond())])
    assert record["rule"] == "dossier_overdue_rate"
    assert record["unit_code"] == record["subject"] == "DNA.SYT"
    assert record["subject_kind"] == "unit"
    assert record["evidence"]["completed_late"] == 3
    assert record["window"] == "30d" and record["window_days"] == 30
    assert record["clear_threshold"] == 0.25
    assert record["message"] == f"{BASE.message_vi} / {BASE.message_en}"


def test_open_alert_key_is_rule_and_subject() -> None:
    assert open_alert_key(BASE) == "dossier_overdue_rate|DNA.SYT"


def _schema(path: Path) -> Any:
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("state", ["RAISED", "UPDATED", "RESOLVED"])
def test_every_record_fits_alerts_v1(state: str) -> None:
    steps = {
        "RAISED": [(T0, cond())],
        "UPDATED": [(T0, cond()), (T0 + MIN, cond(severity="CRITICAL"))],
        "RESOLVED": [(T0, cond()), (T0 + MIN, cond("clear"))],
    }[state]
    record = run(steps)[-1]
    assert record["state"] == state
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _schema(AVRO / ALERTS_SCHEMA), record)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, _schema(AVRO / ALERTS_SCHEMA))
    assert isinstance(back, dict)
    assert back["subject"] == "DNA.SYT" and back["raised_at"] == record["raised_at"]


def test_the_alerts_schema_evolves_backward_transitively() -> None:
    revisions = schema_revisions(ALERTS_SCHEMA)
    assert revisions == ["alerts/history/alerts.v1.1.avsc", ALERTS_SCHEMA]
    assert check_revisions(revisions) == []


def test_a_revision_1_record_reads_with_the_new_schema() -> None:
    record = {k: v for k, v in run([(T0, cond())])[0].items()}
    old = _schema(AVRO / "alerts" / "history" / "alerts.v1.1.avsc")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old, record)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, old, _schema(AVRO / ALERTS_SCHEMA))
    assert isinstance(back, dict)
    assert back["subject"] == "" and back["subject_kind"] == "unit"
    assert back["clear_threshold"] is None
