"""The running stack's addresses, so a second shell finds the bus `databus up` started.

`databus up` writes ``<data_dir>/stack.json`` once its servers and processes are
started (and again whenever a process restarts), atomically and owner-only (0600):
the addresses of the broker, the schema registry, Redis, the SQL repository and the
health receiver, each bus process's metrics port and pid, and `up`'s own pid. A clean
stop removes it; a file whose ``pid`` is no longer running is stale and ignored.

Every other ``databus`` command run with the same data directory (by default
``.databus`` under the current directory, i.e. the same project) fills the addresses
its settings leave empty from this file; a variable set in the environment always
wins (``apply_stack``). ``databus env`` prints the same addresses as ``export`` lines
for other shells (``export_lines``). The file holds no secret: a SQL URL with a
password is recorded without it and not exported.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bus.settings import Settings

__all__ = [
    "LOCK_FILE",
    "STACK_FILE",
    "StackInfo",
    "apply_stack",
    "export_lines",
    "lock_free",
    "pid_alive",
    "read_stack",
    "remove_stack",
    "stack_path",
    "write_stack",
]

STACK_FILE = "stack.json"


@dataclass(frozen=True)
class StackInfo:
    """What `databus up` records about the stack it runs."""

    pid: int
    data_dir: str
    kafka: str | None = None
    schema_registry: str | None = None
    redis: str | None = None
    sql: str | None = None  # None when the configured URL carries a password
    health_receiver: str | None = None
    metrics_ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    started_at: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StackInfo:
        def text(key: str) -> str | None:
            value = body.get(key)
            return str(value) if value else None

        return cls(
            pid=int(body["pid"]),
            data_dir=str(body.get("data_dir", "")),
            kafka=text("kafka"),
            schema_registry=text("schema_registry"),
            redis=text("redis"),
            sql=text("sql"),
            health_receiver=text("health_receiver"),
            metrics_ports={
                str(k): int(v) for k, v in dict(body.get("metrics_ports") or {}).items()
            },
            pids={str(k): int(v) for k, v in dict(body.get("pids") or {}).items()},
            started_at=str(body.get("started_at", "")),
        )


def stack_path(data_dir: Path) -> Path:
    return data_dir.resolve() / STACK_FILE


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def safe_sql_url(url: str) -> str | None:
    """``url`` when it carries no password (SQLite, a passwordless login), else None."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    return url if parsed.password is None else None


def write_stack(data_dir: Path, info: StackInfo) -> Path:
    """Write the stack file atomically (a temporary file, renamed), mode 0600."""
    target = stack_path(data_dir)
    fd, tmp = tempfile.mkstemp(prefix=".stack-", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info.as_json(), fh, indent=1, ensure_ascii=False)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


LOCK_FILE = "up.lock"


def lock_free(data_dir: Path) -> bool:
    """True when no process holds ``<data_dir>/up.lock`` (`up` holds it while it runs);
    False when one does or there is no lock file to tell."""
    import fcntl

    try:
        fh = (data_dir.resolve() / LOCK_FILE).open("rb")
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def read_stack(data_dir: Path, *, include_stale: bool = False) -> StackInfo | None:
    """The running stack of ``data_dir``; None when there is none, the file is
    unreadable, or it is stale — its `up` process is gone, or the data directory's
    lock is free (a reused pid) — unless ``include_stale``."""
    try:
        info = StackInfo.from_json(json.loads(stack_path(data_dir).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not include_stale and (not pid_alive(info.pid) or lock_free(data_dir)):
        return None
    return info


def remove_stack(data_dir: Path, pid: int | None = None) -> None:
    """Remove the stack file (only if it is ``pid``'s, when given)."""
    path = stack_path(data_dir)
    if pid is not None:
        found = read_stack(data_dir, include_stale=True)
        if found is not None and found.pid != pid:
            return
    path.unlink(missing_ok=True)


def apply_stack(settings: Settings, info: StackInfo | None) -> Settings:
    """``settings`` with every address it leaves empty taken from ``info``; an address
    set in the environment (or a settings file) wins."""
    if info is None:
        return settings
    update: dict[str, Any] = {}
    if settings.kafka.bootstrap_servers is None and info.kafka:
        update["kafka"] = settings.kafka.model_copy(update={"bootstrap_servers": info.kafka})
    if settings.schema_registry.url is None and info.schema_registry:
        update["schema_registry"] = settings.schema_registry.model_copy(
            update={"url": info.schema_registry}
        )
    if settings.redis.url is None and info.redis:
        update["redis"] = settings.redis.model_copy(update={"url": info.redis})
    return settings.model_copy(update=update) if update else settings


def export_lines(info: StackInfo) -> list[str]:
    """``export DATABUS_...=...`` lines for a shell, one per address a command needs;
    the health receiver and the metrics ports follow as ``#`` comments (the health
    sink also needs this run's secrets, which are never written anywhere)."""
    import shlex

    pairs = [
        ("DATABUS_DATA_DIR", info.data_dir),
        ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", info.kafka),
        ("DATABUS_SCHEMA_REGISTRY__URL", info.schema_registry),
        ("DATABUS_REDIS__URL", info.redis),
        ("DATABUS_SHARED_REPO__URL", info.sql),
    ]
    lines = [f"export {name}={shlex.quote(value)}" for name, value in pairs if value]
    if info.health_receiver:
        lines.append(f"# health receiver: {info.health_receiver}")
    for name, port in sorted(info.metrics_ports.items()):
        pid = info.pids.get(name)
        lines.append(
            f"# {name}: http://127.0.0.1:{port}/metrics" + (f" (pid {pid})" if pid else "")
        )
    lines.append(f"# databus up: pid {info.pid}")
    return lines
