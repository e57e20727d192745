"""Every long-running bus process serves /metrics, /livez and /readyz, and its readiness
follows its own destination: `databus sink health` is not ready while the health
axis (the project's stand-in receiver here) does not answer, ready once it does;
`databus api` is ready once its own port listens. A sink that stops on a permanent
failure waits for a last scrape, which shows the failure counted, before it exits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from bus_processes import get, poll
from confluent_kafka import Producer
from registry_clients import registry_client
from std_samples import std_events

from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.local_stack import LocalStack, free_port
from databus.standins.health_receiver import HealthReceiver
from schemas.catalog import get_dataset, load_schema, value_subject
from schemas.codec import AvroSerializer

pytestmark = pytest.mark.integration


@contextmanager
def bus_process(
    stack: LocalStack, tmp_path: Path, name: str, *args: str, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``databus ARGS`` with its metrics on a free port; stopped (SIGTERM) at the end."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    full_env = {**stack.env(), "DATABUS_METRICS__PORT": str(port), **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "databus", *args], env=full_env, stdout=out, stderr=out
        )
    try:
        yield proc, port, log
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def readyz(
    proc: subprocess.Popen[bytes], port: int, log: Path
) -> tuple[int, dict[str, Any]] | None:
    if proc.poll() is not None:
        raise AssertionError(
            f"exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
        )
    try:
        status, body = get(port, "/readyz")
    except OSError:  # not listening yet
        return None
    return status, json.loads(body)


def test_health_sink_is_ready_only_while_the_health_axis_answers(
    stack: LocalStack, tmp_path: Path
) -> None:
    axis_port = free_port()
    with bus_process(
        stack,
        tmp_path,
        "sink-health",
        "sink",
        "health",
        DATABUS_HEALTH_AXIS__URL=f"http://127.0.0.1:{axis_port}",
        DATABUS_HEALTH_AXIS__CLIENT_SECRET="probe-test-secret",
        DATABUS_HEALTH_AXIS__PSEUDONYM_KEY="probe-test-pseudonym-key",
        DATABUS_SINK_GROUP=f"probe-test-{uuid.uuid4().hex[:8]}",
    ) as (proc, port, log):

        def answered() -> tuple[int, dict[str, Any]] | None:
            got = readyz(proc, port, log)
            # wait until the checks besides the destination pass (broker, registry)
            if got is None or not got[1]["checks"].get("broker", {}).get("ok"):
                return None
            return got

        status, body = poll("/readyz with the broker checked", answered)
        assert status == 503, body
        assert body["failing"] == ["health_axis"], body
        reason = body["checks"]["health_axis"]["reason"]
        assert f"127.0.0.1:{axis_port} unreachable" in reason, reason
        assert "probe-test-secret" not in json.dumps(body)
        assert get(port, "/livez") == (200, "ok\n")  # a destination down is not a restart
        status, text = get(port, "/metrics")
        assert status == 200
        assert 'databus_sink_failures_total{kind="permanent",sink="health_axis"} 0.0' in text

        with HealthReceiver(port=axis_port, client_secret="probe-test-secret"):

            def ready() -> dict[str, Any] | None:
                got = readyz(proc, port, log)
                return got[1] if got is not None and got[0] == 200 else None

            body = poll("/readyz 200 once the health axis listens", ready, timeout=30)
            assert set(body["checks"]) == {"broker", "schema_registry", "health_axis", "circuit"}

        def down_again() -> dict[str, Any] | None:
            got = readyz(proc, port, log)
            return got[1] if got is not None and got[0] == 503 else None

        body = poll("/readyz 503 once the health axis is gone", down_again, timeout=30)
        assert body["failing"] == ["health_axis"]


def test_api_serves_metrics_and_probes_and_is_ready_once_listening(
    stack: LocalStack, tmp_path: Path
) -> None:
    with bus_process(
        stack,
        tmp_path,
        "api",
        "api",
        "--port",
        "0",
        DATABUS_ACCESS__PSEUDONYM_KEY="probe-test-pseudonym-key",
        DATABUS_ACCESS__AUDIT_LOG=str(tmp_path / "audit.jsonl"),
    ) as (proc, port, log):

        def ready() -> dict[str, Any] | None:
            got = readyz(proc, port, log)
            return got[1] if got is not None and got[0] == 200 else None

        body = poll("the api's /readyz 200", ready, timeout=60)
        assert set(body["checks"]) == {"broker", "schema_registry", "api"}
        assert get(port, "/livez") == (200, "ok\n")
        status, _text = get(port, "/metrics")
        assert status == 200


def test_a_sink_stopping_on_a_permanent_failure_is_scraped_once_more_before_it_exits(
    stack: LocalStack, stack_settings: Settings, registry_url: str, tmp_path: Path
) -> None:
    dataset = get_dataset("health.encounters")
    assert dataset.std_schema is not None
    topic = dataset.std_topic
    ensure_topics(stack_settings, [TopicSpec(topic, stack_settings.kafka.partitions)])
    with (
        HealthReceiver(client_secret="the-right-secret") as axis,
        bus_process(
            stack,
            tmp_path,
            "sink-health-failing",
            "sink",
            "health",
            DATABUS_HEALTH_AXIS__URL=axis.url,
            # a wrong secret: the token endpoint answers 401, a permanent failure
            DATABUS_HEALTH_AXIS__CLIENT_SECRET="a-wrong-secret",
            DATABUS_HEALTH_AXIS__PSEUDONYM_KEY="probe-test-pseudonym-key",
            DATABUS_METRICS__FINAL_SCRAPE_S="120",
            DATABUS_LOG_LEVEL="INFO",
        ) as (proc, port, log),
    ):
        permanent = 'databus_sink_failures_total{kind="permanent",sink="health_axis"}'

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text(errors="replace")[-3000:])
            try:
                return get(port, "/livez")[0] == 200
            except OSError:
                return False

        poll("the sink's /livez", serving)
        status, text = get(port, "/metrics")
        assert status == 200 and f"{permanent} 0.0" in text  # at 0 before any failure

        serialize = AvroSerializer(
            registry_client({"url": registry_url}),
            value_subject(topic),
            load_schema(dataset.std_schema),
        )
        event = std_events("health.encounters")[0]
        producer = Producer(stack_settings.kafka.client_config())
        producer.produce(topic, serialize(event), key=event["after"]["encounter_id"].encode())
        assert producer.flush(15) == 0

        waiting = "waiting for a last scrape of /metrics before exiting"
        poll("the sink's permanent failure", lambda: waiting in log.read_text(errors="replace"))
        assert proc.poll() is None, "the sink exited before its last scrape"
        # only /metrics ends the wait: the probes do not
        assert get(port, "/livez")[0] == 200
        status, text = get(port, "/metrics")
        assert status == 200 and f"{permanent} 1.0" in text, text
        scraped = time.monotonic()
        proc.wait(60)  # well before its 120 s bound: the scrape came
        assert time.monotonic() - scraped < 30
        assert proc.returncode != 0
