"""A second shell finds the bus `databus up` runs, with no address set.

One `databus up` runs piped (stdout not a terminal) on a fresh data directory: it
must print one plain summary line per interval, write its stack file, refuse a second
`up` on the same directory, let operator commands in another process find the bus
(`env`, `status --json`, `tail`, `dlq show`, `reconcile`), and on Ctrl-C print the
last summary and remove the stack file. The quick checks without servers (version,
exit codes, stderr, defaults) are at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from databus_cli import clean_env, run_databus

pytestmark = pytest.mark.integration

UP_TIMEOUT_S = 240.0  # a deadline for conditions, not a window
STOP_TIMEOUT_S = 60.0
LINE = re.compile(r"^databus: t=\d+s in=[\d.]+/s published=\d+ .*live=\d+/\d+", re.MULTILINE)


def _wait_for(
    what: str, check: Callable[[], bool], deadline: float, out: Callable[[], str]
) -> None:
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{out()}")
        time.sleep(0.5)


@dataclass
class PipedUp:
    cwd: Path
    proc: subprocess.Popen[str]
    chunks: list[str] = field(default_factory=list)

    @property
    def out(self) -> str:
        return "".join(self.chunks)

    @property
    def stack_file(self) -> Path:
        return self.cwd / "data" / "stack.json"

    def databus(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """A command from another shell: same project directory, no address variable
        (the data directory is the default one the up fixture uses too)."""
        return run_databus(self.cwd, *args, timeout=timeout)


@pytest.fixture(scope="module")
def piped_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipedUp]:
    cwd = tmp_path_factory.mktemp("databus-piped-up").resolve()
    proc = subprocess.Popen(
        [sys.executable, "-m", "databus", "up", "--days", "3", "--every", "2"],
        cwd=cwd,
        env=clean_env(cwd, COLUMNS="100", LINES="40"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    run = PipedUp(cwd, proc)
    reader = threading.Thread(target=lambda: run.chunks.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        _wait_for("the stack file", run.stack_file.exists, deadline, lambda: run.out)

        def standardized() -> bool:
            # the processor runs and wrote standardized events: its group exists and
            # the std topics hold records
            found = re.findall(r"^databus: t=\d+s .* standardized=(\d+) ", run.out, re.MULTILINE)
            return len(found) >= 2 and int(found[-1]) > 0

        _wait_for(
            "a summary line with standardized events", standardized, deadline, lambda: run.out
        )
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_piped_up_prints_one_plain_line_per_interval(piped_up: PipedUp) -> None:
    lines = LINE.findall(piped_up.out)
    assert len(lines) >= 2, piped_up.out
    # no live-display escape codes or box drawing while it runs, when piped
    running = piped_up.out.split("databus: stopping")[0]
    assert "\x1b[" not in running, running
    assert "┃" not in running, running


def test_the_stack_file_holds_the_addresses_owner_only(piped_up: PipedUp) -> None:
    body = json.loads(piped_up.stack_file.read_text())
    assert oct(piped_up.stack_file.stat().st_mode & 0o777) == "0o600"
    assert body["pid"] == piped_up.proc.pid
    assert re.fullmatch(r"127\.0\.0\.1:\d+", body["kafka"]), body
    assert body["schema_registry"].startswith("http://127.0.0.1:"), body
    assert body["redis"].startswith("redis://127.0.0.1:"), body
    assert body["sql"].startswith("sqlite:///"), body
    assert body["health_receiver"].startswith("http://127.0.0.1:"), body
    assert {"processor", "sink-ioc", "sink-sql", "simulator"} <= set(body["metrics_ports"])
    assert set(body["pids"]) >= set(body["metrics_ports"])


def test_env_prints_exports_for_another_shell(piped_up: PipedUp) -> None:
    result = piped_up.databus("env")
    assert result.returncode == 0, result.stderr
    body = json.loads(piped_up.stack_file.read_text())
    assert f"export DATABUS_KAFKA__BOOTSTRAP_SERVERS={body['kafka']}" in result.stdout
    assert f"export DATABUS_REDIS__URL={body['redis']}" in result.stdout
    assert result.stderr == ""


def test_a_second_up_on_the_same_data_directory_is_refused(piped_up: PipedUp) -> None:
    # refused at once; --for only bounds a wrongly started second bus
    result = piped_up.databus("up", "--for", "5")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "another `databus up`" in result.stderr
    assert f"pid {piped_up.proc.pid}" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_json_finds_the_bus_and_stays_parseable(piped_up: PipedUp) -> None:
    result = piped_up.databus("status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # warnings, if any, went to stderr
    assert any(g["group"].startswith("databus-processor") for g in doc["groups"]), doc


def test_tail_shows_vietnamese_as_text(piped_up: PipedUp) -> None:
    args = ("tail", "publicservice.dossiers.std.v1", "--from-beginning", "--limit", "5")
    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:  # until the processor has standardized some dossiers
        result = piped_up.databus(*args, "--no-follow")
        assert result.returncode == 0, result.stderr
        if result.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert "\\u0" not in result.stdout and "\\u1" not in result.stdout, result.stdout
    assert re.search(r"[À-ỹ]", result.stdout), result.stdout
    for line in result.stdout.splitlines():
        json.loads(line)


def test_dlq_show_and_reconcile_have_defaults(piped_up: PipedUp) -> None:
    shown = piped_up.databus("dlq", "show")
    assert shown.returncode == 0, shown.stderr
    assert "dead letters in the 17 DLQ topics" in " ".join(shown.stdout.split()), shown.stdout
    recon = piped_up.databus("reconcile")
    assert recon.returncode in (0, 1), recon.stderr  # 1: a gap, which is data
    assert "Reconciliation" in recon.stdout, recon.stdout


def test_ctrl_c_prints_the_last_summary_and_removes_the_stack_file(piped_up: PipedUp) -> None:
    piped_up.proc.send_signal(signal.SIGINT)
    piped_up.proc.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + 10
    _wait_for(
        "the output to end",
        lambda: "stopped cleanly" in piped_up.out,
        deadline,
        lambda: piped_up.out,
    )
    out = piped_up.out
    tail = out.split("databus: stopping")[0] if "databus: stopping" in out else out
    assert "Delivery ledger (IOC store)" in out, out
    assert LINE.search(tail.splitlines()[-1] if tail.strip() else ""), out
    assert not piped_up.stack_file.exists()
    after = piped_up.databus("env")
    assert after.returncode == 3, after.stdout
    assert "no `databus up` runs" in after.stderr and after.stdout == ""


# ---- without servers -------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = run_databus(tmp_path, "--version")
    assert result.returncode == 0
    assert re.fullmatch(r"databus \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout


def test_env_without_a_running_bus_exits_3_on_stderr(tmp_path: Path) -> None:
    result = run_databus(tmp_path, "env")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "databus up" in result.stderr


def test_a_stale_stack_file_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "stack.json").write_text(
        json.dumps({"pid": dead.pid, "data_dir": str(tmp_path / "data"), "kafka": "127.0.0.1:1"})
    )
    result = run_databus(tmp_path, "status", "--json")
    assert result.returncode == 2, result.stdout + result.stderr  # no address: a setting
    assert result.stdout == ""
    assert "DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--json"),
        # each waits out the broker's connect timeout (~10 s): the rest in `make test-slow`
        pytest.param(("dlq", "list", "--json"), marks=pytest.mark.slow),
        pytest.param(("dlq", "show"), marks=pytest.mark.slow),
        pytest.param(("reconcile",), marks=pytest.mark.slow),
        pytest.param(
            ("tail", "publicservice.dossiers.std.v1", "--limit", "1"), marks=pytest.mark.slow
        ),
    ],
)
def test_an_unreachable_broker_exits_3_with_stdout_clean(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run_databus(tmp_path, *args, DATABUS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == "", result.stdout
    assert result.stderr.strip() and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("reconcile", "--from", "yesterday"),
        ("template", "--dataset", "no.such"),
        ("dlq", "show", "--offset", "3"),
    ],
)
def test_bad_input_exits_2_on_stderr(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run_databus(tmp_path, *args, DATABUS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_template_writes_to_stdout_or_the_given_file(tmp_path: Path) -> None:
    result = run_databus(tmp_path, "template", "--dataset", "publicservice.dossiers")
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0]
    assert "dossier_id" in header, result.stdout
    assert list(tmp_path.iterdir()) == [], "nothing written into the current directory"
    out = tmp_path / "drop" / "t.csv"
    out.parent.mkdir()
    written = run_databus(
        tmp_path, "template", "--dataset", "publicservice.dossiers", "-o", str(out)
    )
    assert written.returncode == 0, written.stderr
    assert out.read_text(encoding="utf-8").splitlines()[0] == header
    assert written.stdout == ""
