"""The chaos harness: the real bus on the embedded stack, a known set of events, faults.

``ChaosBus`` starts, in a directory of its own: the embedded broker and schema registry
(``LocalStack``), a ``redis-server`` the harness owns (append-only file, so it can be
restarted with or without its data on the same port), optionally a PostgreSQL of its
own (``pgserver``) for the shared repository (else the embedded SQLite file), the
loopback health axis (``databus health-receiver``, which injects 500s and stalls on
``POST /_control``), processor workers (``databus process``), the three sinks
(``databus sink ioc|sql|health``) and a spooled publishing process
(``chaos_publisher.py``). It restarts what a fault killed itself: supervision is not
what this suite tests.

Faults are methods; each waits for a condition with a deadline (the fault took hold,
the process is back), never for a fixed time. ``run_scenario`` publishes the plan,
fires each fault when the publisher has accepted its share of the events, waits until
the checker sees every sink exact or the deadline passes, and returns the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import redis
import sqlalchemy as sa
from chaos_check import (
    DlqCheck,
    Letter,
    Published,
    SinkCheck,
    Stored,
    check_dlq,
    check_events,
    check_sink,
    contribution_drift,
    report_row,
)
from chaos_publisher import Plan, plan_records
from confluent_kafka import Consumer, TopicPartition
from stack_storage import supervise_for_tests

from bus.consumers import take
from bus.settings import Settings, load_settings
from bus.topic_admin import ensure_topics
from databus.local_stack import (
    LocalStack,
    ManagedProcess,
    detach_but_follow_parent,
    free_port,
    redis_binary,
)
from schemas.catalog import get_dataset
from schemas.topics import bus_topics, sink_dlq_topic
from sinks.fhir import LOCAL_SYSTEMS as SYSTEMS
from sinks.fhir import stored_order
from sinks.health_axis import TOPICS as HEALTH_TOPICS
from sinks.ioc.entities import SHARDS, entity_key, shard_tag, sum_key
from sinks.sql_tables import table_name

__all__ = [
    "SINK_NAMES",
    "ChaosBus",
    "Fault",
    "Outcome",
    "dump",
    "format_table",
    "observe",
    "plan_for",
    "published_of",
    "run_scenario",
    "wait_until",
]

HERE = Path(__file__).resolve().parent
AXIS_SECRET = "chaos-axis-secret"
SINK_NAMES = {"sink-ioc": "ioc_store", "sink-sql": "shared_repo", "sink-health": "health_axis"}
HEALTH_DATASETS = tuple(t.removesuffix(".std.v1") for t in HEALTH_TOPICS)
_FHIR = {  # FHIR resource type and identifier system -> dataset
    ("Organization", SYSTEMS["facility"]): "health.facilities",
    ("Encounter", SYSTEMS["encounter"]): "health.encounters",
    ("Condition", SYSTEMS["disease_case"]): "health.disease_cases",
}


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:  # a server in the middle of a fault: ask again
            pass
        if time.monotonic() >= deadline:
            print(f"  (gave up waiting for {what} after {timeout:.0f} s)", flush=True)
            return False
        time.sleep(0.25)  # polling a condition with a deadline, not a fixed wait


def plan_for(
    datasets: Sequence[str], *, days: int, per_day: int, seed: int = 31, rate: float = 0.0
) -> Plan:
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    return Plan(tuple(datasets), days, per_day, seed, 0.08, end.isoformat(), rate)


def published_of(plan: Plan) -> list[Published]:
    out = []
    for rec in plan_records(plan):
        dataset = get_dataset(rec.dataset_id)
        out.append(
            Published(
                event_id=rec.event_id,
                dataset=rec.dataset_id,
                key=dataset.key_of(rec.record.model_dump(mode="python")),
                version=rec.version,
                op=rec.op.value,
                expect_reason=rec.expect_reason,
            )
        )
    return out


# ---------------------------------------------------------------------- processes


class _Redis:
    """The IOC store's redis-server, on a port that survives its restarts."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.dir = work / "redis"
        self.log = work / "logs" / "redis.log"
        self.proc: ManagedProcess | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        self.proc = ManagedProcess("redis (chaos)", argv, self.log)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            ok = wait_until("redis to answer", lambda: bool(client.ping()), 30)
        finally:
            client.close()
        assert ok, f"redis did not start; see {self.log}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.proc.popen.kill()
            self.proc.popen.wait(10)
        if self.proc is not None:
            self.proc.stop()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class _Postgres:
    """A PostgreSQL of the run's own (pgserver), which a fault may crash."""

    def __init__(self, work: Path) -> None:
        from pgserver.postgres_server import get_server

        # beside the bus's data directory, not in it: the bus makes that directory
        # owner-only (0700), and pgserver runs PostgreSQL as its own user
        self.server = get_server(work.with_name(f"{work.name}-pgdata"), cleanup_mode="stop")
        self.url = self.server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)

    def crash(self) -> None:
        pid = self.server.get_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            # gone for good, not a zombie: pgserver would take a zombie for a live server
            wait_until("the postmaster to go", lambda: not Path(f"/proc/{pid}").exists(), 60)

    def restart(self) -> None:
        def started() -> bool:
            # pg_ctl refuses while the crashed postmaster's backends still hold its
            # shared memory (they notice the crash only at their next check): retry
            self.server.ensure_postgres_running()
            return True

        assert wait_until("postgres to start again", started, 120), "postgres did not start"
        engine = sa.create_engine(self.url, connect_args={"connect_timeout": 3})
        try:

            def answers() -> bool:
                with engine.connect() as conn:
                    return conn.execute(sa.text("SELECT 1")).scalar() == 1

            assert wait_until("postgres to answer again", answers, 120), "postgres did not restart"
        finally:
            engine.dispose()

    def stop(self) -> None:
        self.server.cleanup()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _uuid(value: object) -> str:
    """An event id as the publisher spells it (SQLite hands back 32 hex digits)."""
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


class _Source:
    """The spooled publishing process; restartable from its last reported count."""

    def __init__(self, plan: Plan, env: dict[str, str], log_dir: Path) -> None:
        self.plan = plan
        self.env = env
        self.log_dir = log_dir
        self.accepted = 0
        self.done = False
        self.runs = 0
        self.spooled_at_start: list[int] = []  # what each run found in the spool
        self.popen: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.runs += 1
        if self._log is not None:  # the killed run's log (the child had its own copy)
            self._log.close()
        self._log = (self.log_dir / f"publisher-{self.runs}.log").open("wb")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "chaos_publisher.py"),
                self.plan.to_json(),
                str(self.accepted),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, args=(self.popen,), daemon=True).start()

    def _read(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        with popen.stdout:  # closed at the end of the output (the publisher exited)
            self._follow(popen, popen.stdout)

    def _follow(self, popen: subprocess.Popen[str], lines: IO[str]) -> None:
        for line in lines:
            words = line.split()
            if words and words[0] == "ready" and popen is self.popen:
                self.spooled_at_start.append(int(words[1]))
            elif words and words[0] == "accepted" and popen is self.popen:
                self.accepted = max(self.accepted, int(words[1]))
            elif words and words[0] == "done" and popen is self.popen:
                self.done = True

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self._log is not None:
            self._log.close()


@dataclass
class _Proc:
    role: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]
    retired: bool = False  # stopped by a fault on purpose: not "died on its own"


class ChaosBus:
    """The bus under test; ``with ChaosBus(work, ...) as bus:`` stops everything after."""

    def __init__(self, work: Path, *, postgres: bool = False, health_timeout_s: float = 2.0):
        self.work = work
        self.log_dir = work / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.use_postgres = postgres
        self.health_timeout_s = health_timeout_s
        self.procs: dict[str, _Proc] = {}
        self.restarts: Counter[str] = Counter()
        self.faults: list[str] = []
        self._names: Counter[str] = Counter()
        self._stack: LocalStack | None = None
        self.redis = _Redis(work)
        self.pg: _Postgres | None = None
        self.settings: Settings
        self.env: dict[str, str] = {}
        self.source: _Source | None = None
        self.notes: list[str] = []
        self.published: list[Published] = []

    # -- lifecycle

    def __enter__(self) -> ChaosBus:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self.redis.start()
        repo_url: str | None = None
        if self.use_postgres:
            self.pg = _Postgres(self.work)
            repo_url = self.pg.url
        requested = load_settings(
            data_dir=self.work,
            kafka={"bootstrap_servers": None},
            redis={"url": self.redis.url},
            schema_registry={"url": None},
            shared_repo={"url": repo_url, "db_schema": "chaos" if repo_url else None},
            supervise=supervise_for_tests(),
        )
        self._stack = LocalStack(requested).__enter__()
        self.settings = self._stack.settings
        ensure_topics(self.settings, bus_topics(self.settings))
        self.axis_port = free_port()
        self.axis_url = f"http://127.0.0.1:{self.axis_port}"
        self.env = {
            **self._stack.env(),
            "DATABUS_FAUST_LOG_LEVEL": "INFO",
            "DATABUS_HEALTH_AXIS__URL": self.axis_url,
            "DATABUS_HEALTH_AXIS__CLIENT_SECRET": AXIS_SECRET,
            "DATABUS_HEALTH_AXIS__PSEUDONYM_KEY": "chaos-pseudonym-key-0123456789",
            "DATABUS_HEALTH_AXIS__RATE_PER_S": "1000",
            "DATABUS_HEALTH_AXIS__TIMEOUT_S": str(self.health_timeout_s),
            "DATABUS_SINK__BACKOFF_INITIAL_S": "0.1",
            "DATABUS_SINK__BACKOFF_MAX_S": "2",
            "DATABUS_SINK__BREAKER_RESET_TIMEOUT_S": "2",
            "DATABUS_SPOOL__PATH": str(self.work / "spool" / "source.db"),
        }
        if repo_url is not None:
            self.env["DATABUS_SHARED_REPO__URL"] = repo_url
            self.env["DATABUS_SHARED_REPO__DB_SCHEMA"] = "chaos"
        self.repo_url = self.settings.shared_repo.resolved_url(self.work)
        self.spawn(
            "axis", "health-receiver", "--port", str(self.axis_port),
            "--store", str(self.work / "axis.json"), port=self.axis_port,
        )  # fmt: skip

    def close(self) -> None:
        if self.source is not None:
            self.source.stop()
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs.values():
            try:
                proc.popen.wait(30)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)
            proc.log.close()
        if self._stack is not None:
            with contextlib.suppress(Exception):
                os.kill(self.broker_pid, signal.SIGCONT)  # never leave it paused
            self._stack.__exit__(None, None, None)
            self._stack = None
        self.redis.stop()
        if self.pg is not None:
            self.pg.stop()

    # -- processes

    def spawn(self, role: str, *args: str, port: int | None = None) -> str:
        """Start ``databus <args>`` as a new process of ``role``; returns its name."""
        self._names[role] += 1
        name = role if self._names[role] == 1 else f"{role}#{self._names[role]}"
        metrics_port = port or free_port()
        env = {**self.env, "DATABUS_METRICS__PORT": str(metrics_port)}
        log = (self.log_dir / f"{name}.log").open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "databus", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=detach_but_follow_parent,  # no process outlives a killed harness
        )
        self.procs[name] = _Proc(role, tuple(args), popen, metrics_port, log)
        return name

    def ready(self, name: str) -> bool:
        proc = self.procs[name]
        if proc.popen.poll() is not None:
            return False
        path = "/_stats" if proc.role == "axis" else "/readyz"
        try:
            return httpx.get(f"http://127.0.0.1:{proc.port}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, names: Sequence[str], timeout: float = 120) -> bool:
        return wait_until(
            f"{', '.join(names)} ready", lambda: all(self.ready(n) for n in names), timeout
        )

    def start_bus(self, workers: int = 1) -> None:
        names = [self.spawn("worker", "process") for _ in range(workers)]
        names += [
            self.spawn("sink-ioc", "sink", "ioc"),
            self.spawn("sink-sql", "sink", "sql"),
            self.spawn("sink-health", "sink", "health"),
        ]
        assert self.wait_ready(["axis", *names], 180), self.logs_tail(names)

    def live(self, role: str) -> list[str]:
        return [n for n, p in self.procs.items() if p.role == role and p.popen.poll() is None]

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(10)

    def terminate(self, name: str) -> None:
        proc = self.procs[name]
        if proc.popen.poll() is None:
            proc.popen.terminate()
            try:
                proc.popen.wait(30)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)

    def restart(self, name: str) -> str:
        """A new process in the place of ``name`` (which must have stopped)."""
        proc = self.procs[name]
        self.restarts[proc.role] += 1
        return self.spawn(proc.role, *proc.args)

    def revive_dead(self) -> list[str]:
        """Restart every bus process that exited on its own (not what a fault stopped on
        purpose: those are restarted by the fault). Returns who died, with exit codes."""
        died = []
        for name, proc in list(self.procs.items()):
            if proc.role == "axis" or proc.popen.poll() is None or proc.retired:
                continue
            died.append(f"{name} (exit {proc.popen.returncode}{self._crash_reason(name)})")
            proc.retired = True
            self.restart(name)
        return died

    def _crash_reason(self, name: str) -> str:
        """The exception class a process's log names last, if any (": ConsistencyError")."""
        text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        # Faust's "Crashed reason=X(...)" names the cause; a traceback's last line may
        # be a follow-on error of the shutdown ("Event loop is closed")
        found = re.findall(r"Crashed reason=([A-Za-z_.]+)\(", text)[:1] or re.findall(
            r"^([A-Za-z_.]+(?:Error|Exception)):", text, re.MULTILINE
        )
        return f": {found[-1].rsplit('.', 1)[-1]}" if found else ""

    def logs_tail(self, names: Sequence[str], lines: int = 15) -> str:
        out = []
        for name in names:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
            out.append(f"--- {name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(out)

    @property
    def broker_pid(self) -> int:
        assert self._stack is not None and self._stack.broker is not None
        return self._stack.broker.popen.pid

    # -- the source

    def publish(self, plan: Plan) -> _Source:
        self.source = _Source(plan, self.env, self.log_dir)
        self.source.start()
        return self.source

    # -- faults (each waits for its condition; none sleeps a fixed time)

    def _retire(self, name: str) -> None:
        self.procs[name].retired = True

    def kill_and_restart(self, role: str, *, wait_ready: bool = True) -> None:
        """SIGKILL the oldest live process of ``role``, then start a new one (and wait
        until it is ready, unless the next fault may hit it while it starts)."""
        name = self.live(role)[0]
        self._retire(name)
        self.kill(name)
        new = self.restart(name)
        if wait_ready:
            self.wait_ready([new], 180)

    def rebalance_storm(self, rounds: int = 3) -> None:
        """Workers join and leave: each round a worker joins (waited until ready), then
        the oldest leaves — cleanly on even rounds, by SIGKILL on odd ones."""
        for i in range(rounds):
            new = self.spawn("worker", "process")
            self.wait_ready([new], 180)
            old = self.live("worker")[0]
            self._retire(old)
            (self.kill if i % 2 else self.terminate)(old)

    def redis_restart(self, keep_data: bool) -> None:
        """SIGKILL Redis; without its data, its directory is emptied; same port again."""
        self.redis.kill()
        if not keep_data:
            shutil.rmtree(self.redis.dir, ignore_errors=True)
        self.redis.start()

    def postgres_crash(self) -> None:
        """SIGKILL the postmaster; restart it once the SQL sink noticed (not ready)."""
        assert self.pg is not None, "the scenario needs postgres=True"
        sink = self.live("sink-sql")[0]
        self.pg.crash()
        if not wait_until("the SQL sink to notice the crash", lambda: not self.ready(sink), 60):
            self.notes.append("postgres crashed, but the SQL sink did not notice within 60 s")
        self.pg.restart()

    def axis_control(self, command: dict[str, Any]) -> None:
        httpx.post(f"{self.axis_url}/_control", json=command, timeout=5).raise_for_status()

    def axis_stats(self) -> dict[str, int]:
        stats: dict[str, int] = httpx.get(f"{self.axis_url}/_stats", timeout=5).json()
        return stats

    def axis_failures(self, count: int = 5, status: int = 500) -> None:
        """The axis answers ``status`` to the next ``count`` transactions."""
        before = self.axis_stats().get("injected_failures", 0)
        self.axis_control({"action": "fail", "status": status, "count": count})
        self._until_taken(f"{count} injected {status}s", "injected_failures", before + count)

    def axis_stalls(self, count: int = 3) -> None:
        """The next ``count`` transactions stall past the sink's request timeout (the
        axis then applies them anyway: the retry must not duplicate anything)."""
        before = self.axis_stats().get("stalled", 0)
        seconds = self.health_timeout_s * 1.5
        self.axis_control({"action": "stall", "seconds": seconds, "count": count})
        self._until_taken(f"{count} stalled transactions", "stalled", before + count)

    def _until_taken(self, what: str, counter: str, target: int) -> None:
        """Wait until the axis counted ``target`` of ``counter``; a fault still armed
        when the publisher is done and the health sink idle is cleared and reported."""
        taken = wait_until(
            what,
            lambda: (
                self.axis_stats().get(counter, 0) >= target
                or (self.source is not None and self.source.done and self._health_idle())
            ),
            180,
        )
        got = self.axis_stats().get(counter, 0)
        if not taken or got < target:
            self.axis_control({"action": "clear"})
            self.notes.append(f"{what}: only {got} of {target} happened (no traffic left)")

    def _health_idle(self) -> bool:
        """Every health event published is on the axis (nothing left to send)."""
        health = [p for p in self.published if p.dataset in HEALTH_DATASETS and p.valid]
        stored = {(s.dataset, s.key) for s in self.health_stored() if s.version is not None}
        return {(p.dataset, p.key) for p in health} <= stored

    def pause_broker(self) -> None:
        """SIGSTOP the broker until a sink's readiness says it is gone; then SIGCONT."""
        sink = self.live("sink-ioc")[0]
        os.kill(self.broker_pid, signal.SIGSTOP)
        try:
            if not wait_until("a sink to see the broker paused", lambda: not self.ready(sink), 60):
                self.notes.append("broker paused, but no sink noticed within 60 s")
        finally:
            os.kill(self.broker_pid, signal.SIGCONT)

    def kill_publisher(self) -> None:
        """SIGKILL the publishing process mid-run; start it again from its last count."""
        assert self.source is not None
        self.source.kill()
        self.source.start()

    # -- what the sinks hold

    def ioc_stored(self, published: Sequence[Published]) -> tuple[list[Stored], int]:
        client = redis.Redis.from_url(self.redis.url, socket_timeout=10)
        try:
            entities = sorted({(p.dataset, p.key) for p in published})
            pipe = client.pipeline(transaction=False)
            for ds, key in entities:
                pipe.hmget(entity_key(ds, key), "_version", "_event_id")
            stored = [
                Stored(ds, key, int(v), (e or b"").decode())
                for (ds, key), (v, e) in zip(entities, pipe.execute(), strict=True)
                if v is not None
            ]
            contributions: dict[str, list[str]] = {}
            sums: dict[str, dict[str, int]] = {}
            for ds in sorted({p.dataset for p in published}):
                for shard in range(SHARDS):
                    skey = sum_key(ds, shard)
                    keys = list(client.scan_iter(match=f"ioc:{shard_tag(ds, shard)}:e:*"))
                    pipe = client.pipeline(transaction=False)
                    for k in keys:
                        pipe.hget(k, "_c")
                    contributions[skey] = [(c or b"").decode() for c in pipe.execute()]
                    sums[skey] = {_text(k): int(v) for k, v in client.hgetall(skey).items()}
            return stored, contribution_drift(contributions, sums)
        finally:
            client.close()

    def sql_stored(self, datasets: Sequence[str]) -> tuple[list[Stored], Counter[str]]:
        engine = sa.create_engine(self.repo_url)
        schema = "chaos" if self.use_postgres else None
        stored: list[Stored] = []
        rows: Counter[str] = Counter()
        try:
            with engine.connect() as conn:
                names = set(sa.inspect(conn).get_table_names(schema=schema))
                for ds_id in datasets:
                    ds = get_dataset(ds_id)
                    name = table_name(ds)
                    if name not in names:
                        continue
                    meta = sa.MetaData()
                    current = sa.Table(name, meta, schema=schema, autoload_with=conn)
                    cols = [current.c[k] for k in ds.key_fields]
                    query = sa.select(*cols, current.c._version, current.c._event_id)
                    for row in conn.execute(query):
                        key = "|".join(str(v) for v in row[: len(cols)])
                        stored.append(Stored(ds_id, key, int(row[-2]), _uuid(row[-1])))
                    if f"{name}_history" in names:
                        history = sa.Table(
                            f"{name}_history", meta, schema=schema, autoload_with=conn
                        )
                        for (event_id,) in conn.execute(sa.select(history.c._event_id)):
                            rows[_uuid(event_id)] += 1
        finally:
            engine.dispose()
        return stored, rows

    def health_stored(self) -> list[Stored]:
        resources = httpx.get(f"{self.axis_url}/_resources", timeout=30).json()
        stored = []
        for res in resources:
            version, event_id = stored_order(res) or (None, "")
            for ident in res.get("identifier") or ():
                ds = _FHIR.get((res.get("resourceType"), ident.get("system")))
                if ds is not None:
                    stored.append(Stored(ds, str(ident.get("value")), version, event_id))
        return stored

    def letters(self, topics: Sequence[str]) -> list[Letter]:
        """Every record of the DLQ topics that exist, as letters."""
        consumer = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"chaos-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            meta = consumer.list_topics(timeout=10).topics
            parts = [
                TopicPartition(t, p, 0) for t in topics if t in meta for p in meta[t].partitions
            ]
            out: list[Letter] = []
            if not parts:
                return out
            consumer.assign(parts)
            eof: set[tuple[str | None, int | None]] = set()
            deadline = time.monotonic() + 60
            while len(eof) < len(parts) and time.monotonic() < deadline:
                for msg in take(consumer, 500, 1.0):
                    if msg.error():
                        eof.add((msg.topic(), msg.partition()))
                        continue
                    raw: list[tuple[str, bytes | None]] = list(msg.headers() or [])  # type: ignore[arg-type]
                    headers = {k: _text(v or b"") for k, v in raw}
                    out.append(
                        Letter(
                            msg.topic() or "",
                            # a std record's letter: the source event's id is its origin
                            headers.get("ce_originid") or headers.get("ce_id", ""),
                            headers.get("databus.errors.reason", ""),
                        )
                    )
            return out
        finally:
            consumer.close()


# ---------------------------------------------------------------------- checking


@dataclass
class Outcome:
    sinks: list[SinkCheck]
    dlq: DlqCheck

    @property
    def ok(self) -> bool:
        return self.dlq.ok and all(s.ok for s in self.sinks)

    def summary(self) -> str:
        """lost/duplicated/regressed/unexpected(/drift) per sink, and the DLQ's misses."""
        parts = [
            f"{s.sink} {s.lost}/{s.duplicated}/{s.regressed}/{s.unexpected}"
            + (f"/{s.drift}" if s.drift else "")
            for s in self.sinks
        ]
        d = self.dlq
        parts.append(f"dlq miss {d.missing} unexp {d.unexpected} dup {d.duplicated}")
        return "  ".join(parts)


def observe(bus: ChaosBus, published: Sequence[Published]) -> Outcome:
    datasets = sorted({p.dataset for p in published})
    health = [d for d in datasets if d in HEALTH_DATASETS]
    ioc, drift = bus.ioc_stored(published)
    sql, history = bus.sql_stored(datasets)
    checks = [
        check_sink("ioc", published, ioc, drift=drift),
        check_sink("sql", published, sql),
        check_events("sql_history", published, history),
    ]
    if health:
        checks.append(check_sink("health", published, bus.health_stored(), datasets=health))
    dlqs = [get_dataset(d).dlq_topic for d in datasets]
    letters = bus.letters([*dlqs, *(sink_dlq_topic(n) for n in SINK_NAMES.values())])
    sink_topics = {sink_dlq_topic(n) for n in SINK_NAMES.values()}
    dlq = check_dlq(
        published,
        [x for x in letters if x.topic not in sink_topics],
        lambda d: get_dataset(d).dlq_topic,
        sink_letters=[x for x in letters if x.topic in sink_topics],
    )
    return Outcome(checks, dlq)


@dataclass(frozen=True)
class Fault:
    """A fault fired once the publisher has accepted ``at`` (a share) of the events."""

    name: str
    at: float
    fire: Callable[[ChaosBus], None] = field(compare=False)


def run_scenario(
    name: str,
    work: Path,
    plan: Plan,
    faults: Sequence[Fault],
    *,
    workers: int = 1,
    postgres: bool = False,
    deadline_s: float = 300.0,
) -> dict[str, Any]:
    """Run the bus, publish ``plan``, fire ``faults``; the report (JSON-ready)."""
    published = published_of(plan)
    started = time.monotonic()
    with ChaosBus(work, postgres=postgres) as bus:
        bus.published = published
        bus.start_bus(workers)
        ready_s = time.monotonic() - started
        print(f"  bus ready in {ready_s:.0f} s", flush=True)
        source = bus.publish(plan)
        fired: list[str] = []
        died: list[str] = []
        for fault in sorted(faults, key=lambda f: f.at):
            target = int(fault.at * len(published))
            wait_until(
                f"the publisher to accept {target} events",
                lambda t=target: source.accepted >= t or source.done,  # type: ignore[misc]
                deadline_s,
            )
            print(f"  fault: {fault.name} at {source.accepted}/{len(published)}", flush=True)
            fault.fire(bus)
            fired.append(fault.name)
            died += bus.revive_dead()
        wait_until("the publisher to finish", lambda: source.done, deadline_s)
        outcome: list[Outcome] = []

        print(f"  published {len(published)} in {time.monotonic() - started:.0f} s", flush=True)
        last: list[str] = []

        def exact() -> bool:
            died.extend(bus.revive_dead())
            outcome[:] = [observe(bus, published)]
            line = outcome[0].summary()
            if line != (last or [""])[-1]:
                print(f"  {time.monotonic() - started:5.0f} s  {line}", flush=True)
                last.append(line)
            return outcome[0].ok

        converged = wait_until("every sink to be exact", exact, deadline_s)
        if not outcome:
            outcome.append(observe(bus, published))
        result = outcome[0]
        elapsed = time.monotonic() - started
        # Exact sinks are not enough: a process that died on its own (the harness
        # restarted it) or a fault that never took hold fails the scenario too.
        report = {
            "scenario": name,
            "passed": result.ok and not died and not bus.notes,
            "converged": converged,
            "events": len(published),
            "valid": sum(1 for p in published if p.valid),
            "invalid": sum(1 for p in published if not p.valid),
            "datasets": list(plan.datasets),
            "workers": workers,
            "shared_repo": "postgresql" if postgres else "sqlite",
            "faults": fired,
            "restarts": dict(bus.restarts),
            "died_on_their_own": died,
            "publisher_runs": source.runs,
            "spooled_at_publisher_start": source.spooled_at_start,
            "notes": bus.notes,
            "sinks": [report_row(c) for c in result.sinks],
            "dlq": {
                "expected": result.dlq.expected,
                "missing": result.dlq.missing,
                "unexpected": result.dlq.unexpected,
                "wrong_reason": result.dlq.wrong_reason,
                "wrong_topic": result.dlq.wrong_topic,
                "duplicated": result.dlq.duplicated,
                "sink_letters": result.dlq.sink_letters,
                "examples": dict(result.dlq.examples),
            },
            "start_s": round(ready_s, 1),
            "seconds": round(elapsed, 1),
            "logs": str(bus.log_dir),
        }
    return report


def format_table(reports: Sequence[dict[str, Any]]) -> str:
    """One line per scenario and sink: events, faults, lost, duplicated, regressed…"""
    head = (
        f"{'scenario':<24} {'events':>6} {'sink':<12} {'lost':>5} {'dup':>5} {'regr':>5} "
        f"{'unexp':>5} {'drift':>5}  dlq(miss/unexp/reason/dup/sink)  faults"
    )
    lines = [head, "-" * len(head)]
    for r in reports:
        d = r["dlq"]
        dlq = "/".join(
            str(d[k])
            for k in ("missing", "unexpected", "wrong_reason", "duplicated", "sink_letters")
        )
        for i, s in enumerate(r["sinks"]):
            first = i == 0
            lines.append(
                f"{r['scenario'] if first else '':<24} {r['events'] if first else '':>6} "
                f"{s['sink']:<12} {s['lost']:>5} {s['duplicated']:>5} {s['regressed']:>5} "
                f"{s['unexpected']:>5} {s['drift']:>5}  "
                f"{dlq if first else '':<31}  {', '.join(r['faults']) if first else ''}"
            )
        lines.append(
            f"{'':<24} {'':>6} -> {'PASS' if r['passed'] else 'FAIL'} in {r['seconds']} s"
            + (
                f"; died on their own: {', '.join(r['died_on_their_own'])}"
                if r["died_on_their_own"]
                else ""
            )
        )
    return "\n".join(lines)


def dump(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
