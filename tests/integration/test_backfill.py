"""`databus backfill`: history reaches the std topic but raises no real-time alert, and
the delivery ledger counts it as late.

Two receiving units get the same 20-dossier history with half of it completed late
(an overdue rate of 0.5, past the rule's 0.30 with more than its 10 dossiers): one as a
backfill file, the other published live by the same Publisher code path without the
mark. The live copy raises ``dossier_overdue_rate`` — the proof that the history would
have raised it — and the backfilled one raises nothing, nor sends a single rule delta.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from registry_clients import registry_client

from producers.backfill import BACKFILL_HEADER
from producers.file_drop import template_rows
from producers.publisher import Publisher
from schemas.catalog import ALERTS_TOPIC, DOSSIERS, QUALITY_TOPIC
from schemas.codec import AvroDeserializer
from schemas.models.common import Op
from schemas.models.public_service import Dossier
from schemas.topics import rule_deltas_topic

pytestmark = pytest.mark.integration

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
BACKFILLED = "DNA.STP"
LIVE = "DNA.SYT"
N = 20


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    env = {"DATABUS_ALERTS__EVALUATE_EVERY_S": "1"}
    with own_bus(tmp_path_factory.mktemp("backfill"), env=env) as b:
        b.start("processor", "process")
        yield b


def _text(moment: datetime) -> str:
    return moment.astimezone(LOCAL).strftime("%d/%m/%Y %H:%M")


def history(unit: str, now: datetime) -> list[dict[str, str]]:
    """N dossiers completed over the last four weeks (none in the future); every other
    one completed late."""
    header, example = template_rows(Dossier)
    base = dict(zip(header, example, strict=True))
    rows = []
    for i in range(N):
        received = now - timedelta(days=25 - i, hours=3)
        due = received + timedelta(days=3)
        completed = due + (timedelta(days=1) if i % 2 else -timedelta(days=1))
        rows.append(
            {
                **base,
                "dossier_id": f"HS-BF-{unit}-{i:03d}",
                "receiving_unit_code": unit,
                "status": "COMPLETED",
                "received_at": _text(received),
                "due_at": _text(due),
                "completed_at": _text(completed),
            }
        )
    return rows


def alerts(bus: Bus) -> list[dict[str, Any]]:
    client = registry_client(bus.settings.schema_registry.client_config())
    decode = AvroDeserializer(client)
    return [decode(m.value()) for m in read_topic(bus.settings, ALERTS_TOPIC)]


def test_backfilled_history_raises_no_alert_and_counts_as_late(bus: Bus, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "history.csv"
    rows = history(BACKFILLED, now)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    refused = bus.cli("backfill", str(path), "--dataset", DOSSIERS.id)
    assert refused.returncode == 2 and "--time-field" in refused.stderr  # no event time given
    out = bus.cli(
        "backfill",
        str(path),
        "--dataset",
        DOSSIERS.id,
        "--time-field",
        "completed_at",
        "--time-field",
        "received_at",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{N} of {N} rows published to {DOSSIERS.raw_topic} as backfill" in out.stdout

    # Written to std like any event, with the mark kept for the sinks.
    def backfilled_std() -> list[Any]:
        return [
            m
            for m in read_topic(bus.settings, DOSSIERS.std_topic)
            if (m.key() or b"").startswith(f"HS-BF-{BACKFILLED}".encode())
        ]

    wait_for("the backfilled history on std", lambda: len(backfilled_std()) == N, timeout=120)
    for m in backfilled_std():
        assert (BACKFILL_HEADER, b"1") in list(m.headers() or [])

    # Only old backfilled data so far: the dataset is delivering, and late.
    wait_for(
        "a quality report of the dossiers",
        lambda: any(
            (m.key() or b"").decode().startswith(DOSSIERS.id)
            for m in read_topic(bus.settings, QUALITY_TOPIC)
        ),
        timeout=120,
    )
    status = bus.cli("catalog", "status", "--json", "--days", "1")
    assert status.returncode == 0, status.stdout + status.stderr
    doc = json.loads(status.stdout)
    row = next(d for u in doc["units"] for d in u["datasets"] if d["dataset"] == DOSSIERS.id)
    assert (row["delivering"], row["live"], row["late"]) == (True, False, True), row

    # The same history, live: it raises the overdue-rate alert for its unit.
    with Publisher(bus.settings, source_system="backfill-test") as pub:
        for r in history(LIVE, now):
            record = Dossier.model_validate(r)
            completed = datetime.strptime(r["completed_at"], "%d/%m/%Y %H:%M")
            pub.publish(
                DOSSIERS,
                record,
                version=1,
                op=Op.READ,
                changed_at=completed.replace(tzinfo=LOCAL),
            )

    def raised_for(unit: str, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            a
            for a in found
            if a["rule"] == "dossier_overdue_rate" and unit in (a["unit_code"], a["subject"])
        ]

    wait_for(
        "the overdue-rate alert of the live copy",
        lambda: bool(raised_for(LIVE, alerts(bus))),
        timeout=120,
    )
    found = alerts(bus)
    assert raised_for(LIVE, found)[0]["state"] == "RAISED"
    assert raised_for(BACKFILLED, found) == []
    # Not one rule delta was sent for the backfilled unit: nothing could ever raise it.
    deltas = read_topic(bus.settings, rule_deltas_topic(bus.settings.processor_group))
    keys = {(m.key() or b"").decode() for m in deltas}
    assert f"dossier_unit|{LIVE}" in keys
    assert f"dossier_unit|{BACKFILLED}" not in keys
