"""The ``databus`` command line as a user runs it: real subprocesses, real servers.

``databus up`` starts its own embedded broker, Redis and registry (every address
variable is removed from its environment), runs the whole bus fed by the
simulator, prints the final summary and must leave nothing running behind it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from databus_cli import clean_env, run_databus

pytestmark = pytest.mark.integration

UP_TIMEOUT_S = 240.0  # a deadline for conditions, not a window: a loaded machine is slow
STOP_TIMEOUT_S = 60.0

try:
    import psutil
except ImportError:  # the port checks are enough without it
    psutil = None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _processes_under(cwd: Path) -> list[psutil.Process]:
    """Every process started from ``cwd``: `up` and all it spawned inherit it."""
    assert psutil is not None
    found = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        if proc.info["cwd"] and Path(proc.info["cwd"]) == cwd and proc.pid != os.getpid():
            found.append(proc)
    return found


@dataclass
class UpRun:
    cwd: Path
    returncode: int
    out: str
    killed: str  # the process the fixture SIGKILLed while `up` ran
    killed_pid: int
    restarted_pid: int | None  # its pid after the restart (None: never restarted)
    restarts: int  # as processes.json counted them


def _wait_for(what: str, check: Callable[[], bool], deadline: float) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` once ``deadline`` passes."""
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def _processes(cwd: Path) -> dict[str, dict[str, Any]]:
    """`up`'s processes.json by process name ({} while it is not written yet)."""
    try:
        body = json.loads((cwd / "data" / "processes.json").read_text())
    except (OSError, ValueError):
        return {}
    return {p["name"]: p for p in body["processes"]}


def _summary_ready(cwd: Path) -> bool:
    """The figures the summary test asserts are in the processes' metrics and the IOC
    store: events published, standardized and dead-lettered, an alert raised, every
    sink wrote, the ledger has DNA.SYT and the KPIs at least three units."""
    from databus.dashboard import scrape

    procs = _processes(cwd)
    ports = [p["metrics_port"] for p in procs.values() if p["metrics_port"]]
    totals = scrape(ports)

    def total(prefix: str, **labels: str) -> float:
        found = 0.0
        for key, value in totals.items():
            if key.startswith(prefix + "{") and all(f"{k}={v}" in key for k, v in labels.items()):
                found += value
        return found

    return (
        total("databus_events_produced_total", stage="raw") > 0
        and total("databus_events_produced_total", stage="std") > 0
        and total("databus_events_dead_lettered_total") > 0
        and total("databus_alerts_total", state="RAISED") >= 1
        and all(
            total("databus_sink_records_written_total", sink=sink) > 0
            for sink in ("ioc_store", "shared_repo", "health_axis")
        )
    )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def _ledger_ready(redis_url: str) -> bool:
    """The ledger row the summary test asserts: DNA.SYT delivering at least one dataset."""
    from sinks.ioc.ledger import read_ledger

    client = redis.Redis.from_url(redis_url)
    try:
        rows = read_ledger(client)
    except redis.RedisError:
        return False
    finally:
        client.close()
    return any(r["unit"] == "DNA.SYT" and int(r["delivering"]) >= 1 for r in rows)


@pytest.fixture(scope="module")
def up_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpRun]:
    """`databus up` in the background until the summary's figures are there; meanwhile
    one process is SIGKILLed and must come back; then a SIGTERM stops it all."""
    cwd = tmp_path_factory.mktemp("databus-up").resolve()
    # --days 20: with 10 days no unit reaches the alert rule's min_dossiers (10) in
    # the window, so no alert could be raised.
    proc = subprocess.Popen(
        [sys.executable, "-m", "databus", "up", "--days", "20"],
        cwd=cwd,
        env=clean_env(cwd, DATABUS_SUPERVISE__BACKOFF_INITIAL_S="0.5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout or ()), daemon=True)
    reader.start()
    victim = "sink-sql"
    killed_pid, restarted_pid, restarts = 0, None, 0
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        _wait_for("processes.json", lambda: victim in _processes(cwd), deadline)
        killed_pid = int(_processes(cwd)[victim]["pid"])
        os.kill(killed_pid, signal.SIGKILL)

        def came_back() -> bool:
            entry = _processes(cwd).get(victim, {})
            return entry.get("pid") not in (None, killed_pid)

        _wait_for(f"{victim} to be restarted", came_back, deadline)
        restarted_pid = int(_processes(cwd)[victim]["pid"])
        restarts = int(_processes(cwd)[victim]["restarts"])
        port = int(_processes(cwd)[victim]["metrics_port"])
        _wait_for(f"{victim} to be ready again", lambda: _ready(port), deadline)
        _wait_for("the summary's figures", lambda: _summary_ready(cwd), deadline)
        redis_url = re.search(r"started redis at (redis://\S+)", "".join(chunks))
        assert redis_url, "".join(chunks)
        _wait_for("the ledger", lambda: _ledger_ready(redis_url.group(1)), deadline)
        # The embedded Redis dies: `up` starts it again where the sinks expect it, with
        # the data it kept on disk, and the IOC store answers again.
        redis_port = redis_url.group(1).rsplit(":", 1)[1].split("/", 1)[0]
        assert psutil is not None
        (server,) = [
            p
            for p in psutil.process_iter(["cmdline"])
            # redis-server retitles itself "redis-server 127.0.0.1:<port>"
            if "redis-server" in " ".join(p.info["cmdline"] or [])
            and f":{redis_port}" in " ".join(p.info["cmdline"] or [])
        ]
        server.kill()
        _wait_for(
            "the embedded redis to be started again",
            lambda: "embedded redis exited" in "".join(chunks),
            deadline,
        )
        _wait_for("the ledger after redis", lambda: _ledger_ready(redis_url.group(1)), deadline)
        # The embedded broker dies: `up` starts it again on its port, on its data (disk
        # storage), and every process is ready again without a restart of its own.
        broker_port = re.search(r"started kafka broker at 127\.0\.0\.1:(\d+)", "".join(chunks))
        assert broker_port, "".join(chunks)
        (broker,) = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "tansu" in " ".join(p.info["cmdline"] or [])
            and f"tcp://127.0.0.1:{broker_port.group(1)}" in p.info["cmdline"]
        ]
        broker.kill()
        _wait_for(
            "the embedded broker to be started again",
            lambda: "the broker started again" in "".join(chunks),
            deadline,
        )
        _wait_for(
            "every process ready after the broker",
            lambda: all(
                _ready(int(p["metrics_port"]))
                for p in _processes(cwd).values()
                if p.get("metrics_port")
            ),
            deadline,
        )
        # `up` renders a last frame from fresh figures when it is told to stop.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except BaseException as exc:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        run = UpRun(cwd, -1, "".join(chunks), victim, killed_pid, restarted_pid, restarts)
        pytest.fail(f"{exc}\n{run.out}\n{_logs(run)}")
    reader.join(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    try:
        yield UpRun(
            cwd, proc.returncode, "".join(chunks), victim, killed_pid, restarted_pid, restarts
        )
    finally:
        # Only what this test started (same cwd), one by one, and only if it leaked.
        if psutil is not None:
            for leftover in _processes_under(cwd):
                leftover.kill()


def _figure(out: str, name: str) -> int:
    values = re.findall(rf"│ {re.escape(name)}\s+│\s+([\d,]+)", out)
    assert values, f"no {name!r} row in the summary:\n{out}"
    return int(values[-1].replace(",", ""))


def _logs(run: UpRun) -> str:
    logs = sorted((run.cwd / "data" / "logs").glob("*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)


def test_up_runs_the_bus_and_summarizes(up_run: UpRun) -> None:
    out = up_run.out
    assert up_run.returncode == 0, f"{out}\n{_logs(up_run)}"
    assert re.search(r"started kafka broker at 127\.0\.0\.1:\d+", out), out
    assert re.search(r"started redis at redis://127\.0\.0\.1:\d+", out), out
    assert re.search(r"started schema registry at http://127\.0\.0\.1:\d+", out), out
    assert (
        "processes: health-receiver, processor, sink-ioc, sink-sql, sink-health, share, "
        "opendata, simulator" in out
    ), out

    assert _figure(out, "events published") > 0, out
    assert _figure(out, "events standardized") > 0, out
    assert _figure(out, "events dead-lettered") > 0, out
    assert _figure(out, "alerts raised") >= 1, f"{out}\n{_logs(up_run)}"
    for sink in ("ioc_store", "shared_repo", "health_axis"):
        assert _figure(out, sink) > 0, f"{sink} wrote nothing:\n{out}"
    assert "Delivery ledger (IOC store)" in out
    assert re.search(r"│ DNA\.SYT Sở Y tế +│ +3 │ +[1-3] │", out), out

    assert "Per-unit dossier KPIs" in out
    units = set(re.findall(r"│ (DNA\.[A-Z0-9.]+) +│", out))
    assert len(units) >= 3, out
    # The piped final frame ends with its own line, not glued to the next message.
    assert re.search(r"^databus: stopping …$", out, re.MULTILINE), out
    assert out.rstrip().endswith("stopped cleanly."), out


def test_up_restarts_a_killed_process(up_run: UpRun) -> None:
    out = up_run.out
    assert up_run.returncode == 0, out
    assert up_run.restarted_pid is not None, out
    assert up_run.restarted_pid != up_run.killed_pid
    assert up_run.restarts == 1, _logs(up_run)
    # The summary shows the restart and why, and `up` logged the reason with the log's tail.
    # Its state is whatever the last probe said: after the broker's restart below, a
    # sink catching up on a loaded machine may be "not ready for N s" (the state column
    # is tested in tests/unit/bus/test_supervisor.py).
    row = re.search(rf"│ {up_run.killed} +│ +\d+ +│ [^│]+│ +1 +│ +exited with code -9", out)
    assert row, out
    assert f"{up_run.killed} exited with code -9; restart 1" in out, out
    for other in ("processor", "sink-ioc", "sink-health", "share", "opendata", "simulator"):
        assert re.search(rf"│ {other} +│ +\d+ +│ [^│]+│ +0 +│", out), (other, out)
    assert (
        "--- databus up: restart 1 ---"
        in (up_run.cwd / "data" / "logs" / f"{up_run.killed}.log").read_text()
    )


def test_up_starts_its_embedded_redis_again(up_run: UpRun) -> None:
    out = " ".join(up_run.out.split())  # rich may wrap the line
    assert re.search(r"embedded redis exited with status -?\d+; started again on port \d+", out), (
        up_run.out
    )


def test_up_starts_its_embedded_broker_again(up_run: UpRun) -> None:
    out = " ".join(up_run.out.split())  # rich may wrap the line
    assert re.search(
        r"kafka broker \(tansu\) exited with status -?\d+; the broker started again on port \d+",
        out,
    ), up_run.out
    # and no bus process had to be restarted for it: test_up_restarts_a_killed_process
    # reads 0 restarts for every process but the one killed, in the final summary


def test_up_leaves_nothing_running(up_run: UpRun) -> None:
    out = up_run.out
    assert up_run.returncode == 0, out
    ports = {
        name: int(port)
        for name, port in re.findall(
            r"started (kafka broker|redis|schema registry) at \S*?127\.0\.0\.1:(\d+)", out
        )
    }
    assert set(ports) == {"kafka broker", "redis", "schema registry"}, out
    assert not [name for name, port in ports.items() if _accepts(port)], ports
    if psutil is None:
        return
    leftovers = [" ".join(p.cmdline()) for p in _processes_under(up_run.cwd) if p.is_running()]
    assert not leftovers, leftovers
    servers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if ("tansu" in cmd or "redis-server" in cmd) and any(
            str(p) in cmd for p in (ports["kafka broker"], ports["redis"])
        ):
            servers.append(cmd)
    assert not servers, servers


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "localhost"),
        ("DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD", "7"),
        # A value that looks like rich markup is shown as it is, not a crash.
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "[/x]"),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    # A bad setting stops `up` before anything starts, so it needs no --for.
    result = run_databus(tmp_path, "up", **{variable: value})
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert variable in out, out
    assert "Traceback" not in out, out
    assert not (tmp_path / "data").exists(), "nothing may start before settings are valid"


def test_up_stops_cleanly_when_the_embedded_broker_outgrows_its_limit(tmp_path: Path) -> None:
    result = run_databus(
        tmp_path, "up", timeout=UP_TIMEOUT_S, DATABUS_SUPERVISE__EMBEDDED_BROKER_MAX_MB="1"
    )
    out = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert result.returncode == 1, out
    assert "DATABUS_SUPERVISE__EMBEDDED_BROKER_MAX_MB" in out, out
    assert "memory storage keeps every record" in out, out
    assert "DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE=disk" in out, out
    assert "stopped cleanly" not in out, out
    assert "Traceback" not in out, out
    if psutil is not None:
        assert not _processes_under(tmp_path.resolve())


def test_kpis_without_redis_says_what_to_set(tmp_path: Path) -> None:
    result = run_databus(tmp_path, "kpis")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "DATABUS_REDIS__URL" in out, out


def test_kpis_prints_the_table(tmp_path: Path, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        result = run_databus(tmp_path, "kpis", DATABUS_REDIS__URL=redis_url)
    finally:
        client.close()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Per-unit dossier KPIs" in out, out
    for column in ("unit", "recv", "done", "overdue %", "on-time %"):
        assert column in out, out
    assert "DNA." not in out, "an empty store shows no units"


def test_up_keeps_the_data_directory_owner_only(up_run: UpRun) -> None:
    """Broker segments, Redis, Faust tables, the shared repository (and its -wal), the
    audit log, the health axis store, logs: nothing under the data directory is open
    to the group or to others, though the run started under umask 022 — but the open
    data files, public by design (0644, behind the 0700 data directory here)."""
    data = up_run.cwd / "data"
    assert (data / "shared_repo.sqlite").exists(), up_run.out
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    public = data / "open_data"
    opened = {
        str(p.relative_to(data)): oct(stat.S_IMODE(p.lstat().st_mode))
        for p in [data, *data.rglob("*")]
        if not p.is_symlink() and p.parent != public and stat.S_IMODE(p.lstat().st_mode) & 0o077
    }
    assert not opened, opened
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in public.glob("[!.]*")), list(
        public.iterdir()
    )
