"""The bus's real processes for integration tests: start, scrape, stop; topic reads."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from stack_storage import supervise_for_tests

from bus.consumers import take
from bus.settings import Settings, load_settings
from bus.topic_admin import ensure_topics
from databus.dashboard import scrape
from databus.local_stack import LocalStack, free_port
from schemas.topics import bus_topics


def wait_for(what: str, check: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)  # polling a condition with a deadline, not a fixed wait
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Bus:
    def __init__(self, settings: Settings, env: dict[str, str], log_dir: Path) -> None:
        self.settings = settings
        self.env = env
        self.log_dir = log_dir
        self.ports: dict[str, int] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> None:
        self.ports[name] = free_port()
        env = {**self.env, "DATABUS_METRICS__PORT": str(self.ports[name])}
        # The child keeps its own copy of the descriptor; ours is closed at once.
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "databus", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a `databus` command against this bus, as an operator would, and wait."""
        return subprocess.run(
            [sys.executable, "-m", "databus", *args],
            env={**self.env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def metric(self, name: str, sample: str) -> float:
        proc = self.procs[name]
        if proc.poll() is not None:
            log = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{log}")
        return scrape([self.ports[name]]).get(sample, 0.0)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def read_topic(settings: Settings, topic: str, since: dict[int, int] | None = None) -> list[Any]:
    """Every record of a topic (from ``since``: partition -> offset), counted by
    consumption (Tansu's watermarks are approximate)."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, (since or {}).get(p, 0)) for p in parts])
    records: list[Any] = []
    eof: set[int | None] = set()
    while len(eof) < len(parts):
        for msg in take(consumer, 500, 1.0):
            if msg.error():
                eof.add(msg.partition())
            else:
                records.append(msg)
    consumer.close()
    return records


@contextmanager
def own_bus(
    data_dir: Path, *, with_redis: bool = False, env: dict[str, str] | None = None
) -> Iterator[Bus]:
    """A stack of its own (other tests' records cannot change the figures), the
    catalog's topics, and a ``Bus`` to start processes on; everything stops after."""
    requested = load_settings(
        data_dir=data_dir,
        kafka={"bootstrap_servers": None},
        redis={"url": None if with_redis else "redis://unused:1/0"},
        schema_registry={"url": None},
        supervise=supervise_for_tests(),
    )
    with LocalStack(requested) as stack:
        ensure_topics(stack.settings, bus_topics(stack.settings))
        # Faust's own INFO log (rebalances, recovery) goes to the processes' log files.
        extra = {"DATABUS_FAUST_LOG_LEVEL": "INFO", **(env or {})}
        bus = Bus(stack.settings, {**stack.env(), **extra}, data_dir)
        try:
            yield bus
        finally:
            bus.stop()


def get(port: int, path: str) -> tuple[int, str]:
    """The status and body a process's health or metrics endpoint answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def poll(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """``check()``'s first truthy value, polled until the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)  # polling a condition with a deadline, not a fixed wait
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
