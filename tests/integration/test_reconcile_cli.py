"""`databus declare` and `databus reconcile` as an operator runs them."""

from __future__ import annotations

import subprocess
import uuid
from datetime import UTC, datetime

import pytest
from databus_cli import run_databus

from bus.settings import Settings
from bus.topic_admin import ensure_topics
from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration


def databus(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return run_databus(
        None,
        *args,
        DATABUS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        DATABUS_SCHEMA_REGISTRY__URL=settings.schema_registry.url or "",
    )


def test_declare_then_reconcile_reports_the_gap(stack_settings: Settings) -> None:
    ensure_topics(stack_settings, bus_topics(stack_settings))
    unit = f"TEST.{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 11, 18, 3, 0, tzinfo=UTC)  # 10:00 local on 18/11
    events = generate_dossiers(DossierSpec(days=2, units=2), load_reference())[:3]
    with Publisher(stack_settings, source_system="recon-cli") as publisher:
        for i, ev in enumerate(events, start=1):
            publisher.publish(DOSSIERS, ev.dossier, version=i, changed_at=at, unit=unit)

    declared = databus(
        stack_settings,
        "declare",
        "--dataset",
        DOSSIERS.id,
        "--unit",
        unit,
        "--day",
        "2026-11-18",
        "--count",
        "4",
    )
    assert declared.returncode == 0, declared.stdout + declared.stderr

    result = databus(
        stack_settings,
        "reconcile",
        "--from",
        "2026-11-18",
        "--to",
        "2026-11-18",
        "--dataset",
        DOSSIERS.id,
        "--unit",
        unit,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    row = next(line for line in result.stdout.splitlines() if unit in line)
    assert "missing" in row
    cells = [c.strip() for c in row.split("│") if c.strip()]
    assert cells[3:7] == ["4", "3", "0", "1"], cells

    bad = databus(
        stack_settings,
        "declare",
        "--dataset",
        "no.such",
        "--unit",
        unit,
        "--day",
        "2026-11-18",
        "--count",
        "1",
    )
    assert bad.returncode == 2
    assert "no.such" in bad.stderr
