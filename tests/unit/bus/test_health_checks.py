"""The probe endpoints on a real socket: /livez, /readyz (checks, reasons, caching,
deadlines) and /metrics, served by ``bus.metrics.start_health_server``."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from bus.health_checks import CheckFailed, Readiness, thread_check
from bus.metrics import HealthServer, Metrics, serve_metrics, start_health_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, body = get(port, "/readyz")
    return status, json.loads(body)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> Metrics:
    return Metrics(readiness=Readiness(ttl_s=5.0, timeout_s=2.0, clock=clock))


@pytest.fixture
def server(metrics: Metrics) -> Iterator[HealthServer]:
    srv = start_health_server(metrics)
    try:
        yield srv
    finally:
        srv.close()


def test_livez_answers_while_the_process_runs(server: HealthServer) -> None:
    assert get(server.port, "/livez") == (200, "ok\n")


def test_readyz_without_checks_is_ready(server: HealthServer) -> None:
    assert readyz(server.port) == (200, {"status": "ready", "failing": [], "checks": {}})


def test_readyz_is_ready_when_every_check_passes(metrics: Metrics, server: HealthServer) -> None:
    metrics.readiness.add("broker", lambda: None)
    metrics.readiness.add("redis", lambda: True)
    status, body = readyz(server.port)
    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"] == {
        "broker": {"ok": True, "reason": "ok"},
        "redis": {"ok": True, "reason": "ok"},
    }


def test_readyz_names_the_failing_check_and_why_without_secrets(
    metrics: Metrics, server: HealthServer
) -> None:
    def redis_down() -> None:
        raise ConnectionError("Error 111 connecting to redis://:s3cret@10.0.0.7:6379/0.")

    metrics.readiness.add("broker", lambda: None)
    metrics.readiness.add("redis", redis_down)
    metrics.readiness.add("circuit", lambda: (_ for _ in ()).throw(CheckFailed("circuit open")))
    status, body = readyz(server.port)
    assert status == 503
    assert body["status"] == "not ready"
    assert body["failing"] == ["redis", "circuit"]
    assert body["checks"]["broker"]["ok"] is True
    reason = body["checks"]["redis"]["reason"]
    assert reason.startswith("ConnectionError: Error 111 connecting to redis://***@10.0.0.7")
    assert "s3cret" not in json.dumps(body)
    assert body["checks"]["circuit"] == {"ok": False, "reason": "circuit open"}


def test_results_are_cached_for_the_ttl(
    metrics: Metrics, server: HealthServer, clock: Clock
) -> None:
    calls = []
    healthy = threading.Event()

    def check() -> None:
        calls.append(1)
        if not healthy.is_set():
            raise CheckFailed("down")

    metrics.readiness.add("broker", check)
    for _ in range(5):
        assert readyz(server.port)[0] == 503
    assert len(calls) == 1
    healthy.set()
    clock.now += 4.9
    assert readyz(server.port)[0] == 503  # still the cached failure
    clock.now += 0.2
    assert readyz(server.port)[0] == 200
    assert len(calls) == 2


def test_a_scrape_storm_runs_a_check_once(metrics: Metrics, server: HealthServer) -> None:
    calls = []
    release = threading.Event()

    def slow_check() -> None:
        calls.append(1)
        release.wait(5)

    metrics.readiness.add("registry", slow_check)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(readyz(server.port)[0])) for _ in range(16)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert statuses == [200] * 16
    assert len(calls) == 1


def test_a_hanging_check_fails_by_its_deadline_and_is_not_cached() -> None:
    clock = Clock()
    readiness = Readiness(ttl_s=5.0, timeout_s=0.2, clock=clock)
    release = threading.Event()
    calls = []

    def hanging() -> None:
        calls.append(1)
        release.wait(10)

    readiness.add("database", hanging)
    (first,) = readiness.run()
    assert not first.ok and first.reason == "no answer within 0.2 s"
    (again,) = readiness.run()
    assert not again.ok
    assert len(calls) == 1, "a probe waits for the run in flight, it starts no other"
    release.set()
    # The run in flight finishes and its result is cached.
    (done,) = readiness.run()
    assert done.ok


def test_long_reasons_are_cut(metrics: Metrics, server: HealthServer) -> None:
    def noisy() -> None:
        raise CheckFailed("x" * 1000)

    metrics.readiness.add("noisy", noisy)
    _, body = readyz(server.port)
    assert len(body["checks"]["noisy"]["reason"]) == 200


def test_thread_check() -> None:
    readiness = Readiness()
    holder: dict[str, threading.Thread] = {}
    readiness.add("loop", thread_check("the loop", lambda: holder.get("t")))
    (result,) = readiness.run()
    assert (result.ok, result.reason) == (False, "the loop not started yet")
    stop = threading.Event()
    holder["t"] = threading.Thread(target=stop.wait, daemon=True)
    holder["t"].start()
    readiness = Readiness()
    readiness.add("loop", thread_check("the loop", lambda: holder.get("t")))
    assert readiness.run()[0].ok
    stop.set()
    holder["t"].join(5)
    readiness = Readiness()
    readiness.add("loop", thread_check("the loop", lambda: holder.get("t")))
    assert readiness.run()[0].reason == "the loop stopped"


def test_metrics_are_served_on_metrics_and_root(metrics: Metrics, server: HealthServer) -> None:
    metrics.events_consumed.labels("health.encounters", "raw").inc(3)
    for path in ("/metrics", "/"):
        status, text = get(server.port, path)
        assert status == 200
        assert 'databus_events_consumed_total{dataset="health.encounters",stage="raw"} 3.0' in text
    assert get(server.port, "/nothing")[0] == 404


def test_serve_metrics_keeps_its_signature() -> None:
    metrics = Metrics()
    port = serve_metrics(metrics, "127.0.0.1", 0)
    assert get(port, "/livez") == (200, "ok\n")
    assert get(port, "/readyz")[0] == 200


def test_livez_fails_naming_a_stopped_essential_thread(
    server: HealthServer, metrics: Metrics
) -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait, daemon=True)
    metrics.liveness.add("batch_loop", thread_check("the batch loop", lambda: worker))
    worker.start()
    assert get(server.port, "/livez") == (200, "ok\n")
    done.set()
    worker.join(5)
    # No cache: the probe after the thread stopped already fails.
    assert get(server.port, "/livez") == (503, "batch_loop: the batch loop stopped\n")
