"""The ``databus`` command line as a user runs it: real subprocesses, real servers.

``databus up`` starts its own embedded broker, Redis and registry (every address
variable is removed from its environment), runs the whole bus fed by the
simulator, prints the final summary and must leave nothing running behind it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from databus_cli import clean_env, run_databus

pytestmark = pytest.mark.integration

UP_TIMEOUT_S = 90.0

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


@pytest.fixture(scope="module")
def up_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpRun]:
    cwd = tmp_path_factory.mktemp("databus-up").resolve()
    # --days 20: with 10 days no unit reaches the alert rule's min_dossiers (10) in
    # the window, so no alert could be raised; 20 days costs no extra wall time.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bus", "up", "--for", "25", "--days", "20"],
        cwd=cwd,
        env=clean_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=UP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n<test: killed after {UP_TIMEOUT_S:.0f} s>"
    try:
        yield UpRun(cwd, proc.returncode, out)
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
    result = run_databus(tmp_path, "up", "--for", "5", **{variable: value})
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert variable in out, out
    assert "Traceback" not in out, out
    assert not (tmp_path / "data").exists(), "nothing may start before settings are valid"


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
