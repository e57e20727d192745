"""`databus topics create`, `databus status` and `databus tail` as an operator runs them.

``topics create`` and ``tail`` of a topic outside the catalog run on the session
stack; ``status`` and ``tail`` of catalog topics on a bus of their own with a running
processor (its groups, its dead letters; other tests' records cannot change the counts).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from confluent_kafka import Producer
from databus_cli import run_databus

from bus.kafka_client import producer_config
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.local_stack import free_port
from producers.publisher import Publisher
from producers.simulators import SimSpec, generate_dataset, publish_records
from schemas.catalog import DATASETS, DOSSIERS
from schemas.domain.reference import load_reference
from schemas.models.common import Op
from schemas.models.public_service import Channel, Dossier, DossierStatus
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration

CITIZEN_ID = "075190000042"
NAME = "Nguyễn Thị Hòa"
# Datasets with invalid simulated records: the processor dead-letters those.
DLQ_DATASETS = ("health.disease_cases", "transport.vehicle_registrations")


def databus_env(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_databus(
        cwd,
        *args,
        DATABUS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        DATABUS_SCHEMA_REGISTRY__URL=settings.schema_registry.url or "",
    )


# ---- topics create ----------------------------------------------------------------


def test_topics_create_is_idempotent(stack_settings: Settings, tmp_path: Path) -> None:
    first = databus_env(stack_settings, tmp_path, "topics", "create")
    assert first.returncode == 0, first.stdout + first.stderr
    again = databus_env(stack_settings, tmp_path, "topics", "create")
    assert again.returncode == 0, again.stdout + again.stderr
    specs = bus_topics(stack_settings)
    assert f"0 created, {len(specs)} already existed" in again.stdout
    assert "created " not in again.stdout.replace("0 created", "")
    for spec in specs[:3]:
        assert spec.name in again.stdout
    dry = databus_env(stack_settings, tmp_path, "topics", "create", "--dry-run")
    assert dry.returncode == 0 and f"0 of {len(specs)} topics would be created" in dry.stdout


def test_topics_create_names_an_unreachable_broker(tmp_path: Path) -> None:
    where = f"127.0.0.1:{free_port()}"
    out = run_databus(
        tmp_path,
        "topics",
        "create",
        "--timeout",
        "2",
        DATABUS_KAFKA__BOOTSTRAP_SERVERS=where,
    )
    assert out.returncode == 3, out.stdout + out.stderr  # README, "Exit codes"
    err = " ".join(out.stderr.split())  # errors go to stderr; the console wraps them
    assert "cannot reach the broker" in err and where in err


# ---- tail of a topic outside the catalog ------------------------------------------


def test_tail_masks_fields_named_like_personal_data_outside_the_catalog(
    stack_settings: Settings, tmp_path: Path
) -> None:
    topic = f"ops-test.{uuid.uuid4().hex[:8]}.notes"
    ensure_topics(stack_settings, [TopicSpec(topic, 2, 3_600_000)])
    producer = Producer(producer_config(stack_settings))
    for i in range(3):
        value = {"note": f"n{i}", "reporter_name": NAME, "owner_citizen_id": CITIZEN_ID}
        producer.produce(topic, key=CITIZEN_ID.encode(), value=json.dumps(value).encode())
    producer.flush(30)
    out = databus_env(stack_settings, tmp_path, "tail", topic, "--from-beginning", "--no-follow")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted(d["value"]["note"] for d in lines) == ["n0", "n1", "n2"]
    assert CITIZEN_ID not in out.stdout and NAME not in out.stdout
    assert {d["value"]["reporter_name"] for d in lines} == {"***"}
    assert {d["key"] for d in lines} == {"***"}
    assert "not a catalog topic" in out.stderr
    missing = databus_env(stack_settings, tmp_path, "tail", f"{topic}.nope", "--no-follow")
    assert missing.returncode == 2 and "no topic" in missing.stderr


# ---- a bus with a processor: status and tail of catalog topics --------------------


def dossier(dossier_id: str) -> Dossier:
    return Dossier(
        dossier_id=dossier_id,
        dossier_code="000.00.12.H19-250701-0001",
        procedure_code="1.000894",
        procedure_name="Đăng ký khai sinh",
        receiving_unit_code="DNA.STP",
        admin_unit_code="75001",
        applicant_citizen_id=CITIZEN_ID,
        applicant_name=NAME,
        applicant_birth_date="15/03/1990",
        applicant_sex="FEMALE",  # type: ignore[arg-type]
        status=DossierStatus.RECEIVED,
        channel=Channel.ONLINE,
        received_at="01/07/2025 08:30",
        due_at="04/07/2025 17:00",
    )


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    with own_bus(tmp_path_factory.mktemp("ops")) as b:
        b.start("processor", "process")
        yield b


@pytest.fixture(scope="module")
def expected_dlq(bus: Bus) -> dict[str, int]:
    """Publish a few valid and invalid records; wait until the processor is done."""
    ref = load_reference()
    spec = SimSpec(
        days=1, per_day=12, seed=5, invalid_share=0.25, end=datetime.now(UTC) - timedelta(hours=1)
    )
    records = [r for d in DLQ_DATASETS for r in generate_dataset(d, spec, ref)]
    expected = Counter(r.dataset_id for r in records if r.expect_reason is not None)
    assert all(expected[d] > 0 for d in DLQ_DATASETS), expected
    with Publisher(bus.settings, source_system="ops-test") as pub:
        publish_records(pub, records)
        for i in range(3):
            pub.publish(DOSSIERS, dossier(f"HS-OPS-{i}"), version=1, op=Op.CREATE)
    counts: dict[str, int] = {}

    def dead_lettered() -> bool:
        bus.metric("processor", "databus_events_consumed_total")  # fails if it died
        for d in DLQ_DATASETS:
            counts[d] = len(read_topic(bus.settings, DATASETS[d].dlq_topic))
        return counts == dict(expected)

    wait_for("every invalid record dead-lettered", dead_lettered, timeout=180)
    wait_for(
        "the dossiers standardized",
        lambda: len(read_topic(bus.settings, DOSSIERS.std_topic)) >= 3,
        timeout=120,
    )
    return dict(expected)


def test_status_shows_the_processor_and_the_dead_letters(
    bus: Bus, expected_dlq: dict[str, int]
) -> None:
    out = bus.cli("status", "--json", "--timeout", "20")
    assert out.returncode == 0, out.stdout + out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    groups = {g["group"]: g for g in doc["groups"]}
    loop = groups[f"{bus.settings.processor_group}-standardize"]
    assert len(loop["members"]) == 1, loop
    consumed = {t["topic"] for t in loop["topics"]}
    assert {DATASETS[d].raw_topic for d in DLQ_DATASETS} <= consumed
    faust_group = groups[bus.settings.processor_group]
    assert len(faust_group["members"]) == 1, faust_group
    dlq = {d["source"]: d["count"] for d in doc["dlq"]}
    assert set(DATASETS) <= set(dlq)
    assert {d: dlq[d] for d in DLQ_DATASETS} == expected_dlq
    assert sum(dlq.values()) == doc["dlq_total"] == sum(expected_dlq.values())
    assert doc["alerts_from"] == "alerts.v1"  # no IOC store in this bus
    # The same, for people: tables.
    table = bus.cli("status", "--timeout", "20")
    assert table.returncode == 0, table.stdout + table.stderr
    assert f"dead letters: {sum(expected_dlq.values())}" in table.stdout
    assert f"{bus.settings.processor_group}-standardize" in table.stdout


@pytest.mark.parametrize("stage", ["raw", "std"])
def test_tail_masks_the_citizen_id_and_the_name(
    bus: Bus, expected_dlq: dict[str, int], stage: str
) -> None:
    topic = DOSSIERS.topic(stage)
    out = bus.cli("tail", topic, "--from-beginning", "--no-follow", "--limit", "50")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    ours = [d for d in lines if str(d["key"]).startswith("HS-OPS-")]
    assert len(ours) == 3, out.stdout[-2000:]
    assert CITIZEN_ID not in out.stdout and NAME not in out.stdout
    for d in ours:
        assert d["value"]["after"]["applicant_name"] == "***"
        assert d["value"]["after"]["applicant_citizen_id"].startswith("***42")
        assert d["value"]["after"]["procedure_name"] == "Đăng ký khai sinh"
    limited = bus.cli("tail", topic, "--from-beginning", "--limit", "2", "--table")
    assert limited.returncode == 0, limited.stdout + limited.stderr
    assert "2 record(s)" in limited.stdout and NAME not in limited.stdout
