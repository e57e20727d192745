"""Real processes' probes: `databus sink ioc` serves /livez and /readyz on its metrics
port, and /readyz turns 503, naming Redis, when its Redis goes away; `databus process`
is ready once its loop runs, and exports end-to-end latency and consumer lag."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bus_processes import get, own_bus, poll

from databus.dashboard import scrape
from databus.local_stack import LocalStack, ManagedProcess, start_redis

pytestmark = pytest.mark.integration

_PORT = re.compile(r"metrics on http://127\.0\.0\.1:(\d+)/metrics")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[ManagedProcess, str]]:
    proc, url = start_redis(tmp_path)
    try:
        yield proc, url
    finally:
        proc.stop()


@pytest.fixture
def sink_process(
    stack: LocalStack, own_redis: tuple[ManagedProcess, str], tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    _proc, url = own_redis
    log = tmp_path / "sink-ioc.log"
    env = {
        **stack.env(),
        "DATABUS_REDIS__URL": url,
        "DATABUS_METRICS__PORT": "0",  # the process binds a free port and logs it
        "DATABUS_SINK_GROUP": f"probe-test-{uuid.uuid4().hex[:8]}",
        "DATABUS_LOG_LEVEL": "INFO",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "databus", "sink", "ioc"], env=env, stdout=out, stderr=out
        )
    try:

        def port() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"sink exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            found = _PORT.search(log.read_text(errors="replace"))
            return int(found.group(1)) if found else None

        yield proc, poll("the sink's metrics port in its log", port), log
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_sink_probes_follow_its_redis(
    own_redis: tuple[ManagedProcess, str],
    sink_process: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    redis_proc, _url = own_redis
    proc, port, log = sink_process
    assert get(port, "/livez") == (200, "ok\n")

    def ready() -> dict[str, Any] | None:
        status, body = get(port, "/readyz")
        return json.loads(body) if status == 200 else None

    body = poll("/readyz 200", ready)
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"broker", "schema_registry", "redis", "circuit"}
    status, text = get(port, "/metrics")
    assert status == 200 and 'databus_sink_circuit_state{sink="ioc_store"} 0.0' in text

    redis_proc.stop()

    def not_ready() -> dict[str, Any] | None:
        status, body = get(port, "/readyz")
        return json.loads(body) if status == 503 else None

    body = poll("/readyz 503 once Redis is gone", not_ready, timeout=30)
    assert body["status"] == "not ready"
    assert "redis" in body["failing"]
    assert body["checks"]["broker"]["ok"] is True
    assert "ConnectionError" in body["checks"]["redis"]["reason"]
    # Liveness is the process alone: it stays up while a dependency is down.
    assert get(port, "/livez") == (200, "ok\n")
    assert proc.poll() is None, log.read_text()[-3000:]


def test_processor_is_ready_and_exports_latency_and_lag(tmp_path: Path) -> None:
    from producers.publisher import Publisher
    from producers.simulators import DossierSpec, generate_dossiers, publish_records
    from schemas.domain.reference import load_reference

    events = generate_dossiers(
        DossierSpec(days=1, units=2, dossiers_per_unit_per_day=3.0, seed=3), load_reference()
    )
    with own_bus(tmp_path) as bus:
        bus.start("worker", "process")
        port = bus.ports["worker"]

        def ready() -> dict[str, Any] | None:
            bus.metric("worker", "up")  # raises with the log if the worker exited
            try:
                status, body = get(port, "/readyz")
            except OSError:  # not listening yet
                return None
            return json.loads(body) if status == 200 else None

        body = poll("the processor's /readyz 200", ready, timeout=120)
        assert set(body["checks"]) == {"broker", "schema_registry", "batch_loop"}
        assert get(port, "/livez") == (200, "ok\n")

        with Publisher(bus.settings, source_system="probes-test") as pub:
            publish_records(pub, events)
        latency = "databus_end_to_end_latency_seconds_count{dataset=publicservice.dossiers}"

        def observed() -> dict[str, float] | None:
            figures = scrape([port])
            done = figures.get(latency, 0) >= len(events)
            return figures if done and figures.get("databus_consumer_lag") is not None else None

        figures = poll("latency observed for every event, lag exported", observed, timeout=120)
        lag = [k for k in figures if k.startswith("databus_consumer_lag{")]
        assert any("group=databus-processor-standardize" in k for k in lag), lag
