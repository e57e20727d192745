"""The processor's log file with ``DATABUS_LOG__FORMAT=json``: one JSON object per line,
Faust's own lines included, and no spinner or ANSI escape code (standard output is a
file, not a terminal)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from bus_processes import own_bus

from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers, publish_records
from schemas.domain.reference import load_reference

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "fmt",
    ["json", pytest.param("text", marks=pytest.mark.slow)],  # text: `make test-slow`
)
def test_processor_logs_are_lines_without_escape_codes(tmp_path: Path, fmt: str) -> None:
    events = generate_dossiers(
        DossierSpec(days=1, units=2, dossiers_per_unit_per_day=3.0, seed=3), load_reference()
    )
    assert events
    with own_bus(tmp_path, env={"DATABUS_LOG__FORMAT": fmt}) as bus:
        bus.start("worker", "process")
        sample = "databus_events_consumed_total{dataset=publicservice.dossiers,stage=raw}"
        with Publisher(bus.settings, source_system="logs-test") as pub:
            publish_records(pub, events)
        deadline = time.monotonic() + 120
        while bus.metric("worker", sample) < len(events):
            assert time.monotonic() < deadline, "the processor did not consume the events"
            time.sleep(0.2)  # polling a condition with a deadline
    text = (tmp_path / "worker.log").read_text(errors="replace")
    assert "\x1b" not in text, text[-2000:]  # no colour codes, no spinner
    assert "OK ^" not in text and "starting➢" not in text, text[-2000:]
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the processor logged nothing"
    if fmt == "text":
        assert " INFO faust.worker: " in text
        return
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["logger"].startswith("faust") for r in records)  # Faust's lines too
    # no INFO line per schema registry call
    assert not [r for r in records if r["logger"].startswith("httpx") and r["level"] == "INFO"]
