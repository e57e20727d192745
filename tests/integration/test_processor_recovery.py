"""Repeated SIGKILLs and rebalances: no worker exits because of Faust's table recovery.

A stack of its own and two ``databus process`` workers. Dossier history is published
in parts; between parts the second worker is killed with SIGKILL and a replacement
joins, so the group rebalances and the surviving worker recovers its tables from
changelogs each time. The embedded broker reports high watermarks approximately, and
Faust's consistency check ("persisted offset … is higher than the last offset in that
topic (highwater)") used to stop a worker here; the processor turns the check off.
Checked: the first worker lives through every round, every replacement becomes ready,
no log names ``ConsistencyError``, and every valid event reaches the std topic. (With
the check on, the first worker crashed on ``ConsistencyError`` in the first round.)
"""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for

from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers, publish_records
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference

# Five rounds of publishing, a kill and a rebalance: ~4 minutes on a quiet machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200)]

ROUNDS = 4


@pytest.fixture
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    with own_bus(tmp_path_factory.mktemp("recovery")) as b:
        yield b


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return int(resp.status) == 200
    except (urllib.error.HTTPError, OSError):
        return False


def std_ids(bus: Bus) -> set[str]:
    records = read_topic(bus.settings, DOSSIERS.std_topic)
    return {dict(m.headers())["ce_originid"].decode() for m in records}


def test_kills_and_rebalances_never_stop_a_worker_in_table_recovery(bus: Bus) -> None:
    history = generate_dossiers(
        DossierSpec(days=14, units=6, dossiers_per_unit_per_day=2.0, seed=23), load_reference()
    )
    # Consecutive parts, each published in history order: a dossier's later versions
    # never come before its earlier ones (they would be stale).
    size = -(-len(history) // (ROUNDS + 1))
    parts = [history[i : i + size] for i in range(0, len(history), size)]
    assert len(parts) == ROUNDS + 1
    bus.start("worker-a", "process")
    victim = "worker-b0"
    bus.start(victim, "process")
    valid: set[str] = set()
    for round_, part in enumerate(parts):
        valid |= {e.event_id for e in part if e.expect_reason is None}
        with Publisher(bus.settings, source_system="recovery-test") as pub:
            publish_records(pub, part)
        wait_for(
            f"round {round_}: the valid events so far on std",
            lambda: std_ids(bus) >= valid,  # noqa: B023
            timeout=300,
        )
        assert bus.procs["worker-a"].poll() is None, f"worker-a exited in round {round_}"
        if round_ == ROUNDS:
            break
        # Kill the second worker (no clean shutdown) and let a replacement join.
        bus.procs[victim].send_signal(signal.SIGKILL)
        bus.procs[victim].wait(10)
        del bus.procs[victim]
        victim = f"worker-b{round_ + 1}"
        bus.start(victim, "process")
        port = bus.ports[victim]
        wait_for(f"{victim} ready", lambda: ready(port), timeout=180)  # noqa: B023

    for name, proc in bus.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}"
    logs = {p.name: p.read_text(errors="replace") for p in bus.log_dir.glob("worker-*.log")}
    assert len(logs) == ROUNDS + 2
    for name, text in logs.items():
        assert "ConsistencyError" not in text, name
        assert "the batch loop stopped" not in text, name
