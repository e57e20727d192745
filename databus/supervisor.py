"""`databus up` supervises its processes: restart what exited or stayed not ready.

Each process runs ``python -m databus <args>`` with its output appended to
``<data_dir>/logs/<name>.log``. ``Supervisor.check`` is called once a second by `up`:

- a process that exited is restarted after a backoff; why (exit code, the last lines
  of its log) is logged and kept for the summary;
- a process with a ``/readyz`` whose probe failed for ``not_ready_restart_s`` on end
  is stopped (SIGTERM, then SIGKILL) and restarted the same way;
- the backoff doubles with each restart in a row (``backoff_delay``) and starts over
  once the process has run ``stable_after_s``.

The running processes (name, pid, metrics port, restarts) are written to
``<data_dir>/processes.json`` on every start, so an operator or a test can find a
process by its role.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bus.settings import SuperviseSettings
from databus.local_stack import detach_but_follow_parent

__all__ = [
    "PROCESSES_FILE",
    "Child",
    "Supervisor",
    "backoff_delay",
    "log_tail",
]

log = logging.getLogger("databus.supervisor")

PROCESSES_FILE = "processes.json"


def backoff_delay(restarts_in_a_row: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before the next start: ``initial_s`` for the first restart in a
    row, doubling with each further one, never more than ``max_s``."""
    if restarts_in_a_row <= 0:
        return 0.0
    return float(min(max_s, initial_s * 2.0 ** min(restarts_in_a_row - 1, 62)))


def log_tail(path: Path, lines: int = 10, max_bytes: int = 16_384) -> str:
    """The last ``lines`` lines of a log file (read from its end only)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _ready(port: int, timeout: float = 1.0) -> bool:
    # 1 s, Kubernetes' default probe timeout: a process busy catching up answers its
    # probe late on a loaded machine, and a late answer is not a "not ready"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as resp:
            return int(resp.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Child:
    """One supervised process and what the summary shows about it."""

    name: str
    args: list[str]
    env: dict[str, str]
    metrics_port: int | None  # None: no /readyz to probe (exit is still watched)
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # last time /readyz answered ready (or the start)
    # when /readyz first failed since it last answered ready; None while it answers
    # ready. The state shown follows the probes, not the time since the last one: a
    # summary drawn a few seconds after a good probe (a busy machine) says "running".
    unready_since: float | None = None
    restarts: int = 0
    in_a_row: int = 0
    restart_at: float | None = None  # when a pending restart is due
    last_reason: str = ""

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def state(self, now: float) -> str:
        if self.restart_at is not None:
            return f"restarting in {max(0.0, self.restart_at - now):.0f} s"
        if self.popen is None or self.popen.poll() is not None:
            return "stopped"
        unready = now - self.unready_since if self.unready_since is not None else 0.0
        if self.metrics_port is not None and unready > 2.0:
            return f"not ready for {unready:.0f} s"
        return "running"


@dataclass
class Supervisor:
    """Start, watch and restart the bus processes of `databus up`."""

    log_dir: Path
    state_file: Path
    settings: SuperviseSettings
    # Addresses other local tools need to join this bus (no credentials).
    addresses: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    ready: Callable[[int], bool] = _ready

    def add(self, name: str, args: list[str], env: dict[str, str], port: int | None) -> None:
        self.children[name] = Child(name, args, env, port)
        self._start(self.children[name])

    def _start(self, child: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{child.name}.log").open("ab") as out:
            if child.restarts:
                out.write(f"\n--- databus up: restart {child.restarts} ---\n".encode())
                out.flush()
            child.popen = subprocess.Popen(
                [sys.executable, "-m", "databus", *child.args],
                env=child.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Ctrl-C reaches only `up`, which stops the children in order; if it dies
                # without that chance, they follow it instead of lingering.
                preexec_fn=detach_but_follow_parent,
            )
        now = self.clock()
        child.started_at = now
        child.ready_at = now
        child.unready_since = now  # not ready until a probe says so
        child.restart_at = None
        self.write_state()

    def write_state(self) -> None:
        """``processes.json``: who runs under which pid, atomically replaced."""
        body = {
            "up_pid": os.getpid(),
            "addresses": self.addresses,
            "processes": [
                {
                    "name": c.name,
                    "pid": c.pid,
                    "metrics_port": c.metrics_port,
                    "restarts": c.restarts,
                }
                for c in self.children.values()
            ],
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1))
        tmp.replace(self.state_file)

    def check(self) -> None:
        """One supervision round: notice exits and long not-ready spells, restart when due."""
        now = self.clock()
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            assert child.popen is not None
            code = child.popen.poll()
            if code is not None:
                self._schedule(child, now, f"exited with code {code}")
                continue
            if now - child.started_at >= self.settings.stable_after_s:
                child.in_a_row = 0  # it has run long enough: the next failure starts over
            if child.metrics_port is None:
                continue
            if self.ready(child.metrics_port):
                child.ready_at = now
                child.unready_since = None
                continue
            if child.unready_since is None:
                child.unready_since = now
            if child.ready_at is not None and (
                now - child.ready_at >= self.settings.not_ready_restart_s
            ):
                _terminate(child.popen)
                self._schedule(child, now, f"not ready for {now - child.ready_at:.0f} s (/readyz)")

    def bound_logs(self) -> None:
        """Keep each process's log under ``max_log_mb``: past it, the log becomes
        ``<name>.log.1`` (a copy, replacing the older one) and starts again empty. The
        children append (O_APPEND), so they go on writing at the new end."""
        limit = int(self.settings.max_log_mb * 1024 * 1024)
        for child in self.children.values():
            path = self.log_dir / f"{child.name}.log"
            try:
                if path.stat().st_size <= limit:
                    continue
                shutil.copyfile(path, path.with_suffix(".log.1"))
                os.truncate(path, 0)
            except OSError as exc:
                log.warning("could not bound %s: %s", path, exc)

    def _schedule(self, child: Child, now: float, why: str) -> None:
        child.restarts += 1
        child.in_a_row += 1
        delay = backoff_delay(
            child.in_a_row, self.settings.backoff_initial_s, self.settings.backoff_max_s
        )
        child.restart_at = now + delay
        child.last_reason = why
        tail = log_tail(self.log_dir / f"{child.name}.log")
        log.warning(
            "%s %s; restart %d in %.1f s; its log (%s) ends with:\n%s",
            child.name,
            why,
            child.restarts,
            delay,
            self.log_dir / f"{child.name}.log",
            tail,
        )
        self.write_state()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child, then wait (SIGKILL what outlives ``timeout``)."""
        procs = [c.popen for c in self.children.values() if c.popen is not None]
        for c in self.children.values():
            c.restart_at = None
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = self.clock() + timeout
        for name, proc in self._named(procs):
            try:
                proc.wait(max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                proc.kill()
                proc.wait()

    def _named(
        self, procs: Iterable[subprocess.Popen[bytes]]
    ) -> list[tuple[str, subprocess.Popen[bytes]]]:
        by_pid = {c.pid: c.name for c in self.children.values()}
        return [(by_pid.get(p.pid, str(p.pid)), p) for p in procs]

    def rows(self) -> list[tuple[str, int | None, str, int, str]]:
        """Per process: name, pid, state, restarts, the reason of the last restart."""
        now = self.clock()
        return [
            (c.name, c.pid, c.state(now), c.restarts, c.last_reason) for c in self.children.values()
        ]


def _terminate(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
