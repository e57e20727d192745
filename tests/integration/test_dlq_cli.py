"""`databus dlq list|show|replay` as an operator runs them, on the real broker and registry.

Dead letters are written here by hand (framed records + ``dlq_headers``), the way the
processor writes them, to the DLQ of a dataset no other test dead-letters into; each
test uses its own reason codes so it counts only its own letters.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import KafkaError, Message, Producer
from databus_cli import run_databus
from registry_clients import registry_client

from bus.kafka_client import producer_config
from bus.settings import Settings
from bus.topic_admin import ensure_topics
from databus.dlq_replay import read_topics
from producers.headers import cloudevent_headers
from schemas.catalog import DATASETS, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.dead_letters import REPLAY_HEADER, DeadLetter, dlq_headers, omitted_dlq_headers
from schemas.topics import bus_topics

pytestmark = pytest.mark.integration

DS = DATASETS["transport.vehicle_registrations"]
CITIZEN_ID = "079188123456"
NAME = "Trần Văn Bình"
Headers = list[tuple[str, bytes | None]]


def databus(
    settings: Settings, cwd: Path, *args: str, registry: bool = True
) -> subprocess.CompletedProcess[str]:
    return run_databus(
        cwd,
        *args,
        DATABUS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers or "",
        DATABUS_SCHEMA_REGISTRY__URL=(settings.schema_registry.url or "") if registry else "",
    )


def encoded_event(settings: Settings, plate: str) -> tuple[bytes, bytes, Headers]:
    """A valid raw event (key, framed value, CloudEvents headers) with personal data."""
    client = registry_client(settings.schema_registry.client_config())
    serializer = AvroSerializer(client, value_subject(DS.raw_topic), load_schema(DS.raw_schema))
    event_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    record = {
        "plate": plate,
        "vehicle_type": "CAR",
        "brand": "VinFast",
        "model": None,
        "owner_kind": "INDIVIDUAL",
        "owner_citizen_id": CITIZEN_ID,
        "owner_name": NAME,
        "registration_date": date(2024, 5, 2),
        "inspection_expiry_date": None,
        "inspection_station_code": None,
        "status": "ACTIVE",
    }
    envelope = {
        "event_id": event_id,
        "op": "c",
        "ts_ms": now,
        "source": {
            "system": "dlq-cli-test",
            "unit": DS.owner_unit,
            "dataset": DS.id,
            "ts_ms": now,
            "version": 1,
        },
        "before": None,
        "after": record,
    }
    headers = cast(
        Headers,
        cloudevent_headers(
            event_id=event_id,
            source="/databus/dlq-cli-test",
            event_type=f"vn.gov.databus.{DS.id}.c",
            time=now,
        ),
    )
    headers.append(("x-source-note", b"kept as sent"))
    return plate.encode(), serializer(envelope), headers


def letter(reason: str, stage: str = "standardize") -> DeadLetter:
    return DeadLetter(
        stage=stage,
        reason=reason,
        exception_class="bus.errors.ValidationError",
        message="citizen id does not match the birth year",
        message_vi="Số định danh không khớp năm sinh",
        field="owner_citizen_id",
    )


def write_letters(
    settings: Settings, letters: list[tuple[bytes, bytes, Headers, DeadLetter]]
) -> list[tuple[int, int]]:
    """Produce dead letters to the dataset's DLQ; their (partition, offset), in order."""
    producer = Producer(producer_config(settings))
    where: dict[int, tuple[int, int]] = {}

    def report(i: int) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            where[i] = (msg.partition() or 0, msg.offset() or 0)

        return on_delivery

    for i, (key, value, headers, dead) in enumerate(letters):
        producer.produce(
            DS.dlq_topic,
            key=key,
            value=value,
            # confluent-kafka stub: produce(headers=) is an invariant List of str|bytes|None
            headers=dlq_headers(  # type: ignore[arg-type]
                headers, topic=DS.raw_topic, partition=0, offset=100 + i, letter=dead
            ),
            on_delivery=report(i),
        )
    assert producer.flush(30) == 0
    return [where[i] for i in range(len(letters))]


def lid(partition: int, offset: int) -> str:
    return f"{DS.dlq_topic}:{partition}:{offset}"


def replayed(settings: Settings, ids: set[str]) -> list[Message]:
    """Records on the raw topic that are replays of the given letters."""
    out = []
    for msg in read_topics(settings, [DS.raw_topic]):
        mark = dict(cast(list[tuple[str, bytes]], msg.headers() or [])).get(REPLAY_HEADER)
        if mark is not None and mark.decode() in ids:
            out.append(msg)
    return out


@pytest.fixture(scope="module")
def topics(stack_settings: Settings) -> None:
    ensure_topics(stack_settings, bus_topics(stack_settings))


@pytest.mark.usefixtures("topics")
def test_list_shows_counts_by_stage_and_reason_and_the_latest_letters(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    twice, once = f"birth_year_mismatch_{tag}", f"unknown_unit_{tag}"
    events = [encoded_event(stack_settings, f"43A-{i}{tag[:3]}") for i in range(3)]
    at = write_letters(
        stack_settings,
        [
            (*events[0], letter(twice)),
            (*events[1], letter(twice)),
            (*events[2], letter(once, stage="validate")),
        ],
    )

    result = databus(stack_settings, tmp_path, "dlq", "list", "--dataset", DS.id, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    (entry,) = doc["datasets"]
    assert entry["dataset"] == DS.id and entry["dlq_topic"] == DS.dlq_topic
    counts = {(r["stage"], r["reason"]): r["count"] for r in entry["by_stage_reason"]}
    assert counts[("standardize", twice)] == 2
    assert counts[("validate", once)] == 1
    mine = {v["letter_id"]: v for v in entry["latest"] if tag in v["reason"]}
    assert set(mine) == {lid(p, o) for p, o in at}
    first = mine[lid(*at[0])]
    assert first["message_vi"] == "Số định danh không khớp năm sinh"
    assert first["field"] == "owner_citizen_id"
    assert first["original_topic"] == DS.raw_topic and first["original_offset"] == 100

    table = databus(stack_settings, tmp_path, "dlq", "list", "--dataset", DS.id)
    assert table.returncode == 0, table.stdout + table.stderr
    row = next(line for line in table.stdout.splitlines() if twice in line and "│" in line)
    assert [c.strip() for c in row.split("│") if c.strip()][-1] == "2"
    assert "Số định danh không khớp năm sinh" in table.stdout
    assert CITIZEN_ID not in table.stdout + result.stdout

    everything = databus(stack_settings, tmp_path, "dlq", "list", "--json", "--limit", "0")
    assert everything.returncode == 0, everything.stderr
    assert DS.id in {d["dataset"] for d in json.loads(everything.stdout)["datasets"]}


@pytest.mark.usefixtures("topics")
def test_show_masks_personal_fields_and_explains_undecodable_letters(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    key, value, headers = encoded_event(stack_settings, f"43B-{tag[:5]}")
    json_value = json.dumps({"owner_name": NAME, "owner_citizen_id": CITIZEN_ID}).encode()
    (good, bad) = write_letters(
        stack_settings,
        [
            (key, value, headers, letter(f"birth_year_mismatch_{tag}")),
            (
                key,
                json_value,
                headers,
                DeadLetter("decode", "bad_magic_byte", "bus.errors.CodecError", "magic byte 123"),
            ),
        ],
    )

    shown = databus(
        stack_settings,
        tmp_path,
        "dlq",
        "show",
        "--dataset",
        DS.id,
        "--partition",
        str(good[0]),
        "--offset",
        str(good[1]),
    )
    out = shown.stdout + shown.stderr
    assert shown.returncode == 0, out
    assert CITIZEN_ID not in out and NAME not in out
    assert "***56 (12 chars)" in out  # the last two digits and the length, nothing more
    assert '"owner_name": "***"' in out
    assert '"plate": "43B-' in out  # not personal: shown as is
    assert f"birth_year_mismatch_{tag}" in out
    assert "Số định danh không khớp năm sinh" in out
    assert "x-source-note" in out and DS.raw_topic in out
    assert "next step" in out and "databus dlq replay" in out

    broken = databus(
        stack_settings,
        tmp_path,
        "dlq",
        "show",
        "--dataset",
        DS.id,
        "--partition",
        str(bad[0]),
        "--offset",
        str(bad[1]),
    )
    out = broken.stdout + broken.stderr
    assert broken.returncode == 0, out
    assert "cannot decode the value" in out and "bad_magic_byte" in out
    assert "JSON" in out
    assert CITIZEN_ID not in out and NAME not in out

    missing = databus(
        stack_settings, tmp_path, "dlq", "show", "--dataset", DS.id, "--offset", "99999999"
    )
    assert missing.returncode == 1, missing.stdout
    assert "databus dlq list --dataset" in " ".join(missing.stderr.split())  # errors: stderr

    unknown = databus(
        stack_settings, tmp_path, "dlq", "show", "--dataset", "no.such", "--offset", "0"
    )
    assert unknown.returncode == 2 and "no.such" in unknown.stderr


@pytest.mark.usefixtures("topics")
def test_replay_sends_the_selected_letters_once_with_original_bytes(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    fixed, other = f"reference_fixed_{tag}", f"still_broken_{tag}"
    events = [encoded_event(stack_settings, f"43C-{i}{tag[:4]}") for i in range(3)]
    at = write_letters(
        stack_settings,
        [(*events[0], letter(fixed)), (*events[1], letter(other)), (*events[2], letter(fixed))],
    )
    chosen = {lid(*at[0]): events[0], lid(*at[2]): events[2]}
    every = {lid(p, o) for p, o in at}

    dry = databus(
        stack_settings,
        tmp_path,
        "dlq",
        "replay",
        "--dataset",
        DS.id,
        "--reason",
        fixed,
        "--dry-run",
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "nothing was sent" in dry.stdout
    assert {
        line.split()[2] for line in dry.stdout.splitlines() if line.startswith("  would send")
    } == set(chosen)
    assert replayed(stack_settings, every) == []

    sent = databus(stack_settings, tmp_path, "dlq", "replay", "--dataset", DS.id, "--reason", fixed)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"2 sent to {DS.raw_topic}, 0 already replayed" in sent.stdout
    records = replayed(stack_settings, every)
    assert len(records) == 2
    for msg in records:
        mark = dict(cast(list[tuple[str, bytes]], msg.headers() or []))[REPLAY_HEADER].decode()
        key, value, headers = chosen[mark]
        assert msg.key() == key and msg.value() == value
        assert list(msg.headers() or []) == [*headers, (REPLAY_HEADER, mark.encode())]

    again = databus(
        stack_settings, tmp_path, "dlq", "replay", "--dataset", DS.id, "--reason", fixed
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"0 sent to {DS.raw_topic}, 2 already replayed" in again.stdout
    assert len(replayed(stack_settings, every)) == 2

    # one letter by its coordinates; an offset that holds no letter is an error
    one = databus(
        stack_settings,
        tmp_path,
        "dlq",
        "replay",
        "--dataset",
        DS.id,
        "--partition",
        str(at[1][0]),
        "--offset",
        str(at[1][1]),
    )
    assert one.returncode == 0, one.stdout + one.stderr
    assert [
        dict(cast(list[tuple[str, bytes]], m.headers() or []))[REPLAY_HEADER].decode()
        for m in replayed(stack_settings, {lid(*at[1])})
    ] == [lid(*at[1])]
    nowhere = databus(
        stack_settings, tmp_path, "dlq", "replay", "--dataset", DS.id, "--offset", "99999999"
    )
    assert nowhere.returncode == 2 and "99999999" in nowhere.stderr


@pytest.mark.usefixtures("topics")
def test_replay_sends_nothing_for_a_letter_kept_without_its_bytes(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """A record too large to keep is on the DLQ as its size and digest only: replaying
    it would put an empty record on the raw topic, so replay says so and sends nothing."""
    tag = uuid.uuid4().hex[:8]
    reason = f"record_too_large_{tag}"
    key, value, headers = encoded_event(stack_settings, f"51D-{tag[:5]}")
    producer = Producer(producer_config(stack_settings))
    producer.produce(
        DS.dlq_topic,
        key=key,
        value=b"",
        headers=omitted_dlq_headers(  # type: ignore[arg-type]  # confluent-kafka stub, as above
            headers,
            topic=DS.raw_topic,
            partition=0,
            offset=7,
            letter=letter(reason, stage="produce"),
            size=len(value),
            sha256=hashlib.sha256(value).hexdigest(),
        ),
    )
    assert producer.flush(30) == 0

    out = databus(stack_settings, tmp_path, "dlq", "replay", "--dataset", DS.id, "--reason", reason)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 selected letter(s) were kept without their bytes" in out.stdout, out.stdout
    assert f"0 sent to {DS.raw_topic}" in out.stdout, out.stdout
    letters = [
        m
        for m in read_topics(stack_settings, [DS.dlq_topic])
        if dict(m.headers() or []).get("databus.errors.reason") == reason.encode()
    ]
    assert len(letters) == 1
    ids = {lid(letters[0].partition() or 0, letters[0].offset() or 0)}
    assert replayed(stack_settings, ids) == []
