"""Readiness checks: small callables a process registers, run (and cached) for ``/readyz``.

A check passes unless it raises; the exception, scrubbed of URL credentials and cut
short, becomes the reason ``/readyz`` names. Results are cached for ``ttl_s`` so a
storm of probes or scrapes costs the broker one metadata request per period, and each
check runs on a thread of its own with a deadline: a destination that hangs makes the
probe answer "no answer within … s" instead of hanging the probe.

Checks of this module (built lazily; each carries its own short client timeout too):

- ``broker_check``: ``AdminClient.list_topics`` (one metadata request);
- ``registry_check``: ``GET /subjects`` on the schema registry;
- ``redis_check``: ``PING`` on a client of its own;
- ``sql_check``: ``SELECT 1`` on an engine;
- ``tcp_check``: a TCP connection to a URL's host and port opens (an HTTP destination
  reached without a request, so no token or quota is spent per probe);
- ``dir_check``: a directory the process writes into exists and is writable;
- ``thread_check``: a worker thread of the process is alive.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import sqlalchemy as sa

    from bus.settings import Settings

__all__ = [
    "Check",
    "CheckFailed",
    "CheckResult",
    "Readiness",
    "broker_check",
    "dir_check",
    "redis_check",
    "registry_check",
    "sql_check",
    "tcp_check",
    "thread_check",
]

Check = Callable[[], object]

_REASON_CHARS = 200
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


class CheckFailed(Exception):
    """Raised by a check to fail with a reason of its own."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    reason: str  # "ok", or why not
    at: float  # monotonic time the check finished


def _reason(exc: BaseException) -> str:
    text = _CREDENTIALS.sub(r"\g<scheme>***@", str(exc)).strip() or "failed"
    if not isinstance(exc, CheckFailed):
        text = f"{type(exc).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


class _Entry:
    def __init__(self, name: str, check: Check) -> None:
        self.name = name
        self.check = check
        self.result: CheckResult | None = None
        self.running: threading.Event | None = None


class Readiness:
    """The readiness checks of one process, by name (registration order is kept)."""

    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def add(self, name: str, check: Check) -> None:
        """Register (or replace) the check called ``name``."""
        with self._lock:
            self._entries[name] = _Entry(name, check)

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def run(self) -> list[CheckResult]:
        """Every check's result: cached while fresh, else run now (all in parallel)."""
        with self._lock:
            entries = list(self._entries.values())
            waits = [(entry, self._fresh_or_start(entry)) for entry in entries]
        deadline = time.monotonic() + self._timeout_s
        out = []
        for entry, got in waits:
            if isinstance(got, CheckResult):
                out.append(got)
                continue
            got.wait(max(0.0, deadline - time.monotonic()))
            with self._lock:
                result = entry.result
                if result is None or entry.running is got:
                    # Still running: not cached, so the next probe asks (and waits) again.
                    result = CheckResult(
                        entry.name, False, f"no answer within {self._timeout_s:g} s", self._clock()
                    )
            out.append(result)
        return out

    def _fresh_or_start(self, entry: _Entry) -> CheckResult | threading.Event:
        """Under the lock: the cached result, or the event of the run in flight."""
        if entry.result is not None and self._clock() - entry.result.at < self._ttl_s:
            return entry.result
        if entry.running is None:
            done = entry.running = threading.Event()
            threading.Thread(
                target=self._run_one,
                args=(entry, done),
                name=f"readiness-{entry.name}",
                daemon=True,  # a check stuck in a client call must not keep the process up
            ).start()
        return entry.running

    def _run_one(self, entry: _Entry, done: threading.Event) -> None:
        try:
            entry.check()
        except Exception as exc:
            ok, reason = False, _reason(exc)
        else:
            ok, reason = True, "ok"
        with self._lock:
            entry.result = CheckResult(entry.name, ok, reason, self._clock())
            entry.running = None
        done.set()


# ---- the checks of the bus's processes


def broker_check(settings: Settings, timeout_s: float = 2.0) -> Check:
    """One metadata request to the brokers (a client of its own, created on first use)."""
    client: dict[str, Any] = {}

    def check() -> None:
        from confluent_kafka.admin import AdminClient

        if "admin" not in client:
            client["admin"] = AdminClient(settings.kafka.client_config())
        metadata = client["admin"].list_topics(timeout=timeout_s)
        if not metadata.brokers:
            raise CheckFailed("no broker in the cluster metadata")

    return check


def registry_check(settings: Settings, timeout_s: float = 2.0) -> Check:
    """``GET /subjects`` on the schema registry."""
    client: dict[str, Any] = {}

    def check() -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        if "registry" not in client:
            conf: dict[str, Any] = {**settings.schema_registry.client_config()}
            conf["timeout"] = timeout_s
            client["registry"] = SchemaRegistryClient(conf)
        client["registry"].get_subjects()

    return check


def redis_check(url: str, timeout_s: float = 2.0) -> Check:
    """``PING`` on a Redis client of its own (the sink's may be busy or blocked)."""
    client: dict[str, Any] = {}

    def check() -> None:
        import redis

        if "redis" not in client:
            client["redis"] = redis.Redis.from_url(
                url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
            )
        if not client["redis"].ping():
            raise CheckFailed("PING got no PONG")

    return check


def sql_check(engine: sa.Engine) -> Check:
    """``SELECT 1`` on the engine (a connection from its pool)."""

    def check() -> None:
        import sqlalchemy as sa

        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    return check


def thread_check(what: str, thread: Callable[[], threading.Thread | None]) -> Check:
    """The process's worker thread (``thread()`` returns it once started) is alive."""

    def check() -> None:
        t = thread()
        if t is None:
            raise CheckFailed(f"{what} not started yet")
        if not t.is_alive():
            raise CheckFailed(f"{what} stopped")

    return check


def tcp_check(url: str | Callable[[], str | None], timeout_s: float = 2.0) -> Check:
    """A TCP connection to ``url``'s host and port (443/80 by scheme when it names
    none) opens within ``timeout_s``, then closes. ``url`` may be a callable, for an
    address known only once something is bound (``None``: not yet)."""

    def check() -> None:
        target = url() if callable(url) else url
        if target is None:
            raise CheckFailed("not listening yet")
        parts = urlsplit(target)
        host = parts.hostname
        if not host:
            raise CheckFailed("the URL names no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                pass
        except OSError as exc:
            raise CheckFailed(f"{host}:{port} unreachable ({exc.strerror or exc})") from exc

    return check


def dir_check(path: Path) -> Check:
    """``path`` is a directory the process can write into (created if missing)."""

    def check() -> None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckFailed(f"cannot create {path}: {exc.strerror or exc}") from exc
        if not os.access(path, os.W_OK | os.X_OK):
            raise CheckFailed(f"{path} is not writable")

    return check
