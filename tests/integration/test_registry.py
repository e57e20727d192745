"""The embedded registry, driven by confluent-kafka's own clients on a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from databus.standins.registry_server import CONTENT_TYPE, RegistryServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RAW_AVSC = ROOT / "schemas" / "avro" / "publicservice" / "dossiers.raw.v1.avsc"
TOPIC = "publicservice.dossiers.raw.v1"
SUBJECT = f"{TOPIC}-value"


@pytest.fixture
def schemas_topic() -> str:
    # Each test gets its own store, apart from the session registry on `_schemas`.
    return f"_schemas_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def registry(kafka_bootstrap: str, schemas_topic: str) -> Iterator[RegistryServer]:
    with RegistryServer(kafka_bootstrap, topic=schemas_topic) as server:
        yield server


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry.url}) as sr_client:
        yield sr_client


def raw_schema() -> str:
    return RAW_AVSC.read_text(encoding="utf-8")


def with_top_level_field(schema: str, field: dict[str, Any]) -> str:
    document = json.loads(schema)
    document["fields"].append(field)
    return json.dumps(document)


def dossier_event() -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "op": "c",
        "ts_ms": 1_767_225_600_000,
        "source": {
            "system": "dvc-portal",
            "unit": "000.00.01.H01",
            "dataset": "publicservice.dossiers",
            "ts_ms": 1_767_225_599_000,
            "version": 1,
        },
        "before": None,
        "after": {
            "dossier_id": "D-1",
            "dossier_code": "000.00.01.H01-260101-0001",
            "procedure_code": "1.001234",
            "procedure_name": "Cấp giấy phép xây dựng",
            "receiving_unit_code": "000.00.01.H01",
            "admin_unit_code": "00001",
            "applicant_citizen_id": "001000000000",
            "applicant_name": "Nguyễn Văn Thử",
            "applicant_birth_date": None,
            "applicant_sex": None,
            "status": "RECEIVED",
            "channel": "ONLINE",
            "received_at": "2026-01-01T08:00:00",
            "due_at": "2026-01-10T17:00:00",
            "completed_at": None,
        },
    }


def test_confluent_serializer_and_deserializer_work_unchanged(
    registry: RegistryServer, client: SchemaRegistryClient
) -> None:
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    event = dossier_event()

    payload = AvroSerializer(client, raw_schema())(event, ctx)
    assert payload is not None
    assert payload[0] == 0
    schema_id = int.from_bytes(payload[1:5], "big")

    with SchemaRegistryClient({"url": registry.url}) as reader:
        decoded = AvroDeserializer(reader)(payload, ctx)
    assert decoded is not None
    assert str(decoded["event_id"]) == event["event_id"]
    assert decoded["after"] == event["after"]

    latest = client.get_latest_version(SUBJECT)
    assert (latest.schema_id, latest.version, latest.subject) == (schema_id, 1, SUBJECT)
    assert latest.schema.schema_str is not None
    assert json.loads(latest.schema.schema_str) == json.loads(raw_schema())
    assert client.get_versions(SUBJECT) == [1]
    assert client.get_subjects() == [SUBJECT]
    assert client.lookup_schema(SUBJECT, Schema(raw_schema(), "AVRO")).version == 1
    assert client.get_version(SUBJECT, 1).schema_id == schema_id


def test_versions_compatibility_and_levels_through_the_client(client: SchemaRegistryClient) -> None:
    first = client.register_schema(SUBJECT, Schema(raw_schema(), "AVRO"))
    assert client.register_schema(SUBJECT, Schema(raw_schema(), "AVRO")) == first

    compatible = with_top_level_field(
        raw_schema(), {"name": "trace_id", "type": ["null", "string"], "default": None}
    )
    breaking = with_top_level_field(raw_schema(), {"name": "priority", "type": "int"})
    assert client.test_compatibility(SUBJECT, Schema(compatible, "AVRO"))
    assert not client.test_compatibility(SUBJECT, Schema(breaking, "AVRO"), verbose=True)

    second = client.register_schema(SUBJECT, Schema(compatible, "AVRO"))
    assert second == first + 1
    assert client.get_versions(SUBJECT) == [1, 2]
    # The same schema under another subject keeps its global id, as in Confluent's registry.
    assert client.register_schema("other-value", Schema(compatible, "AVRO")) == second
    assert client.get_subjects() == ["other-value", SUBJECT]

    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(SUBJECT, Schema(breaking, "AVRO"))
    assert refused.value.http_status_code == 409
    assert refused.value.error_code == 409
    assert "'priority'" in refused.value.error_message
    assert "reader_field_missing_default_value" in refused.value.error_message

    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"
    # confluent-kafka stub: set_compatibility() is typed str; it returns the registry's JSON
    assert client.set_compatibility(subject_name=SUBJECT, level="NONE") == {"compatibility": "NONE"}  # type: ignore[comparison-overlap]
    assert client.get_compatibility(SUBJECT) == "NONE"
    assert client.register_schema(SUBJECT, Schema(breaking, "AVRO")) == second + 1

    assert client.delete_subject("other-value") == [1]
    assert client.get_subjects() == [SUBJECT]


def test_restarted_registry_serves_the_same_ids(kafka_bootstrap: str, schemas_topic: str) -> None:
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    compatible = with_top_level_field(
        raw_schema(), {"name": "trace_id", "type": ["null", "string"], "default": None}
    )
    with (
        RegistryServer(kafka_bootstrap, topic=schemas_topic) as before,
        SchemaRegistryClient({"url": before.url}) as client,
    ):
        first = client.register_schema(SUBJECT, Schema(raw_schema(), "AVRO"))
        second = client.register_schema(SUBJECT, Schema(compatible, "AVRO"))
        client.set_compatibility(level="FULL_TRANSITIVE")
        payload = AvroSerializer(client, raw_schema())(dossier_event(), ctx)

    with (
        RegistryServer(kafka_bootstrap, topic=schemas_topic) as after,
        SchemaRegistryClient({"url": after.url}) as client,
    ):
        assert client.get_versions(SUBJECT) == [1, 2]
        assert client.get_latest_version(SUBJECT).schema_id == second
        assert client.get_version(SUBJECT, 1).schema_id == first
        assert client.get_compatibility() == "FULL_TRANSITIVE"
        assert client.register_schema(SUBJECT, Schema(raw_schema(), "AVRO")) == first
        decoded = AvroDeserializer(client)(payload, ctx)
        assert decoded is not None
        assert decoded["after"]["dossier_code"] == "000.00.01.H01-260101-0001"
        fresh = client.register_schema("fresh-value", Schema('"string"', "AVRO"))
        assert fresh == second + 1


def test_errors_use_confluent_codes_and_content_type(registry: RegistryServer) -> None:
    with httpx.Client(base_url=registry.url) as http:
        missing = http.get("/subjects/nope/versions")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith(CONTENT_TYPE)
        assert missing.json()["error_code"] == 40401

        protobuf = http.post(
            "/subjects/p-value/versions",
            json={"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"},
        )
        assert (protobuf.status_code, protobuf.json()["error_code"]) == (422, 42201)
        assert "AVRO only" in protobuf.json()["message"]

        invalid = http.post("/subjects/p-value/versions", json={"schema": '{"type": "recrd"}'})
        assert invalid.json()["error_code"] == 42201

        level = http.put("/config", json={"compatibility": "SIDEWAYS"})
        assert (level.status_code, level.json()["error_code"]) == (422, 42203)

        assert http.get("/schemas/ids/999").json()["error_code"] == 40403
        assert http.get("/nowhere").json()["error_code"] == 404

        registered = http.post("/subjects/s-value/versions", json={"schema": '"string"'})
        assert registered.json() == {"id": 1}
        assert http.get("/subjects/s-value/versions/2").json()["error_code"] == 40402
        assert http.get("/subjects/s-value/versions/latest/schema").text == '"string"'
        verbose = http.post(
            "/compatibility/subjects/s-value/versions/latest?verbose=true",
            json={"schema": '"int"'},
        ).json()
        assert verbose["is_compatible"] is False
        assert "type_mismatch" in verbose["messages"][0]


def test_store_topic_is_compacted_and_kept_forever(
    registry: RegistryServer, kafka_bootstrap: str, schemas_topic: str
) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource("topic", schemas_topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)

    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].value == "-1"
    registry.stop()
    registry.stop()


def test_module_serves_in_the_foreground(kafka_bootstrap: str, schemas_topic: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "databus.standins.registry_server",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--topic",
            schemas_topic,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client() as http:
            assert http.get(f"{url}/subjects").json() == []
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert returncode == 0
