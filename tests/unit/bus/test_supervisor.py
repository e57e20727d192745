"""`databus up`'s supervision: the backoff between restarts and the log tail it reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.settings import load_settings
from databus.supervisor import Child, Supervisor, backoff_delay, log_tail


@pytest.mark.parametrize(
    ("in_a_row", "expected"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0), (10_000, 60.0)],
)
def test_backoff_doubles_up_to_its_cap(in_a_row: int, expected: float) -> None:
    assert backoff_delay(in_a_row, initial_s=1.0, max_s=60.0) == expected


def test_log_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert log_tail(log, lines=3) == "line 9997\nline 9998\nline 9999"
    assert log_tail(tmp_path / "missing.log") == ""


def test_supervise_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABUS_SUPERVISE__NOT_READY_RESTART_S", "45")
    assert load_settings().supervise.not_ready_restart_s == 45.0
    monkeypatch.setenv("DATABUS_SUPERVISE__NOT_READY_RESTART_S", "0")
    with pytest.raises(ConfigError, match="DATABUS_SUPERVISE__NOT_READY_RESTART_S"):
        load_settings()


def test_a_log_past_its_bound_moves_aside_and_the_writer_goes_on(tmp_path: Path) -> None:
    settings = load_settings(supervise={"max_log_mb": 0.01})  # ~10 KB
    sup = Supervisor(tmp_path, tmp_path / "processes.json", settings.supervise)
    sup.children["sink-sql"] = Child("sink-sql", [], {}, None)
    path = tmp_path / "sink-sql.log"
    with path.open("ab") as writer:  # as a child's stdout: O_APPEND
        writer.write(b"old line\n" * 2000)
        writer.flush()
        sup.bound_logs()
        writer.write(b"new line\n")
        writer.flush()
    assert path.read_bytes() == b"new line\n"  # no hole of zeros before it
    assert (tmp_path / "sink-sql.log.1").read_bytes() == b"old line\n" * 2000
    sup.bound_logs()  # under the bound: left alone
    assert path.read_bytes() == b"new line\n"


def test_a_process_not_ready_too_long_is_stopped_and_restarted_with_backoff(
    tmp_path: Path,
) -> None:
    """A real child (the loopback health receiver) whose readiness probe keeps failing:
    the clock and the probe are the test's, the process and its restart are real."""
    from databus.local_stack import free_port

    now = [0.0]
    settings = load_settings(
        supervise={"not_ready_restart_s": 30, "backoff_initial_s": 2, "backoff_max_s": 8}
    ).supervise
    sup = Supervisor(
        tmp_path / "logs",
        tmp_path / "processes.json",
        settings,
        clock=lambda: now[0],
        ready=lambda port: False,
    )
    args = ["health-receiver", "--port", str(free_port())]
    sup.add("receiver", args, dict(os.environ), port=1)
    try:
        child = sup.children["receiver"]
        first = child.popen
        assert first is not None and first.poll() is None
        now[0] = 29.0
        sup.check()
        assert child.restart_at is None and first.poll() is None  # not yet
        now[0] = 31.0
        sup.check()
        assert first.poll() is not None, "stopped once not ready for 30 s"
        assert child.restarts == 1 and child.restart_at == 33.0  # backoff 2 s
        assert child.last_reason == "not ready for 31 s (/readyz)"
        assert sup.rows()[0][2] == "restarting in 2 s"
        now[0] = 33.0
        sup.check()
        assert child.popen is not first and child.popen is not None
        assert child.popen.poll() is None
        state = json.loads((tmp_path / "processes.json").read_text())
        assert state["processes"] == [
            {"name": "receiver", "pid": child.popen.pid, "metrics_port": 1, "restarts": 1}
        ]
    finally:
        sup.stop(timeout=10)
    assert all(c.popen is None or c.popen.poll() is not None for c in sup.children.values())


def test_the_state_shown_follows_the_probes_not_the_time_since_the_last_one(
    tmp_path: Path,
) -> None:
    """A summary drawn a few seconds after a good probe (a busy machine, a slow scrape)
    says "running"; "not ready" is shown only once a probe failed, for how long since."""
    from databus.local_stack import free_port

    now, answer = [0.0], [True]
    sup = Supervisor(
        tmp_path / "logs",
        tmp_path / "processes.json",
        load_settings().supervise,
        clock=lambda: now[0],
        ready=lambda port: answer[0],
    )
    sup.add("receiver", ["health-receiver", "--port", str(free_port())], dict(os.environ), port=1)
    try:
        now[0] = 5.0
        assert sup.rows()[0][2] == "not ready for 5 s"  # started, never probed ready yet
        sup.check()
        now[0] = 9.0  # four seconds after the good probe, no probe since
        assert sup.rows()[0][2] == "running"
        answer[0] = False
        sup.check()  # the first failed probe
        now[0] = 10.0
        assert sup.rows()[0][2] == "running"  # a blip under 2 s is not shown
        sup.check()
        now[0] = 12.5
        assert sup.rows()[0][2] == "not ready for 4 s"
        answer[0] = True
        sup.check()
        assert sup.rows()[0][2] == "running"
    finally:
        sup.stop(timeout=10)
