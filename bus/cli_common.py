"""What every ``databus`` command shares: the console, settings that stop with a clear
message, logging, and running a long-lived loop until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from bus.errors import DatabusError
from bus.settings import Settings, load_settings

__all__ = [
    "broker_settings_or_exit",
    "broker_topics",
    "console",
    "fail",
    "row_progress",
    "settings_or_exit",
    "setup_logging",
    "stop_on_signals",
]

console = Console()


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except DatabusError as exc:
        # escape: the message quotes the bad value, which may look like rich markup
        console.print(
            f"[red]{escape(str(exc))}[/]\nFix the variable(s) above (see README, 'Settings')."
        )
        raise typer.Exit(2) from exc


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=os.environ.get("DATABUS_LOG_LEVEL", level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: long-running commands stop cleanly on either."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` in red and exit with ``code``."""
    # escape: messages quote values (topics, ids) that may look like rich markup
    console.print(f"[red]{escape(message)}[/]")
    raise typer.Exit(code)


def broker_settings_or_exit() -> Settings:
    """Settings for a command that talks to the broker: exit 2 naming what is missing."""
    try:
        settings = load_settings()
    except DatabusError as exc:
        fail(f"{exc}\nFix the variable(s) above (see README, 'Settings').", 2)
    if settings.kafka.bootstrap_servers is None:
        fail(
            "DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set: point it at the bus's Kafka "
            "(ask the data team for the address).",
            2,
        )
    return settings


def broker_topics(settings: Settings, timeout: float) -> dict[str, int]:
    """Every topic of the broker and its partition count; exit 2 when unreachable."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka.client_config())
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        fail(
            f"cannot reach the broker at {settings.kafka.bootstrap_servers} "
            f"in {timeout:.0f} s ({exc.args[0]}); check DATABUS_KAFKA__BOOTSTRAP_SERVERS "
            "and that the broker runs, then try again",
            2,
        )
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
