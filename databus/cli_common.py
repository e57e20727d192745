"""What every ``databus`` command shares: the console, settings that stop with a clear
message, logging, running a long-lived loop until Ctrl-C or SIGTERM, and the exit codes.

Exit codes, the same from every command (docs/operations.md, "Exit codes"):

| code | meaning                                                                   |
|------|---------------------------------------------------------------------------|
| 0    | done                                                                      |
| 1    | done, but something needs a look (rejected rows, a failed check)          |
| 2    | a setting or an argument is wrong (the message names it)                  |
| 3    | the broker (or another server) cannot be used now: unreachable, refused  |
|      | login, failed TLS handshake; the message says which                       |

:func:`exit_code_for` is the one mapping from an error to its code.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bus.audit import AuditLog
from bus.errors import BrokerError, ConfigError, DatabusError, DeliveryError, RegistryError
from bus.settings import Settings, load_settings

__all__ = [
    "CATCHING_UP_LAG",
    "EXIT_BAD_SETTING",
    "EXIT_BROKER",
    "NO_BUS_HINT",
    "audit_log",
    "broker_or_exit",
    "broker_settings_or_exit",
    "broker_topics",
    "console",
    "err_console",
    "exit_code_for",
    "fail",
    "fail_on",
    "row_progress",
    "settings_or_exit",
    "setup_logging",
    "stop_on_signals",
]

console = Console()
err_console = Console(stderr=True)  # errors go to stderr, so piped output stays clean

EXIT_BAD_SETTING = 2
# Above this many records of processor lag, `up`'s summary marks figures "catching up".
CATCHING_UP_LAG = 1_000
EXIT_BROKER = 3
BROKER_CHECK_TIMEOUT_S = 10.0


def exit_code_for(exc: BaseException, default: int = 1) -> int:
    """The exit code of a command stopped by ``exc``: 2 for a bad setting, 3 for a
    server that cannot be used now (the broker unreachable, a refused login, a failed
    TLS handshake, a broker that does not acknowledge, an unreachable or failing schema
    registry), else ``default``."""
    from bus.kafka_client import is_broker_failure

    if isinstance(exc, ConfigError):
        return EXIT_BAD_SETTING
    if isinstance(exc, BrokerError | DeliveryError) or is_broker_failure(exc):
        return EXIT_BROKER
    if isinstance(exc, RegistryError) and exc.retriable:
        return EXIT_BROKER
    return default


def fail_on(exc: BaseException, default: int = 1, settings: Settings | None = None) -> NoReturn:
    """Print why ``exc`` stopped the command (a broker failure says why, naming the user and
    mechanism when the login was refused) and exit with :func:`exit_code_for`."""
    from bus.kafka_client import broker_error, is_broker_failure

    if settings is not None and not isinstance(exc, DatabusError) and is_broker_failure(exc):
        fail(str(broker_error(settings.kafka, exc)), EXIT_BROKER)
    fail(str(exc), exit_code_for(exc, default))


def broker_or_exit(settings: Settings, timeout: float = BROKER_CHECK_TIMEOUT_S) -> None:
    """Stop with exit 3 and the reason (unreachable, refused login, failed TLS) unless the
    broker answers with these settings; a command that needs the broker calls it first."""
    from bus.kafka_client import check_broker

    if settings.kafka.bootstrap_servers is None:
        return  # the command says itself that the address is missing (exit 2)
    try:
        check_broker(settings.kafka, timeout)
    except BrokerError as exc:
        fail(str(exc), EXIT_BROKER)


def settings_or_exit(*, use_stack: bool = True) -> Settings:
    """The settings, or exit 2 naming the bad variable. With ``use_stack`` (every command
    but `up`), an address the settings leave empty comes from the stack `databus up`
    runs on the same data directory (``databus.stack_file``); the environment wins."""
    try:
        settings = load_settings()
    except DatabusError as exc:
        # escape: the message quotes the bad value, which may look like rich markup
        err_console.print(
            f"[red]{escape(str(exc))}[/]\n"
            "Fix the variable(s) above (see docs/operations.md, 'Settings')."
        )
        raise typer.Exit(EXIT_BAD_SETTING) from exc
    if use_stack:
        from databus.stack_file import apply_stack, read_stack

        settings = apply_stack(settings, read_stack(settings.data_dir))
    return settings


NO_BUS_HINT = (
    "start one with `databus up` (or `make run`) in this project, or point the variable "
    "at the bus (ask the data team for the address)"
)


def setup_logging(level: str = "INFO") -> None:
    """Logs as ``DATABUS_LOG__*`` asks (``bus.logs``), and traces exported when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``bus.tracing``), named after the command."""
    from bus import logs, tracing

    logs.configure(default_level=level)
    words = [a for a in sys.argv[1:3] if not a.startswith("-")]
    tracing.configure("-".join(["databus", *words]))


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: long-running commands stop cleanly on either."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``."""
    # escape: messages quote values (topics, ids) that may look like rich markup
    err_console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(code)


def broker_settings_or_exit(check: bool = True) -> Settings:
    """Settings for a command that talks to the broker: exit 2 naming what is missing,
    exit 3 when the broker cannot be used (``check``)."""
    settings = settings_or_exit()
    if settings.kafka.bootstrap_servers is None:
        fail(
            "DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set and no `databus up` runs on "
            f"{settings.data_dir}: {NO_BUS_HINT}.",
            EXIT_BAD_SETTING,
        )
    if check:
        broker_or_exit(settings)
    return settings


def broker_topics(settings: Settings, timeout: float) -> dict[str, int]:
    """Every topic of the broker and its partition count; exit 3 when unreachable."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        broker_or_exit(settings, timeout)  # says why: unreachable, refused login, TLS
        fail_on(exc, EXIT_BROKER, settings)
    return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}


@contextmanager
def row_progress(description: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar with counts and time left; yields the callable that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


def audit_log(settings: Settings) -> AuditLog:
    """The audit log every command appends to, rotated at the configured size."""
    access = settings.access
    return AuditLog(
        access.resolved_audit_log(settings.data_dir),
        max_bytes=access.audit_max_bytes,
        keep=access.audit_keep_files,
    )
