"""What every ``databus`` command shares: the console, settings that stop with a clear
message, logging, and running a long-lived loop until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading

import typer
from rich.console import Console
from rich.markup import escape

from bus.errors import DatabusError
from bus.settings import Settings, load_settings

__all__ = ["console", "settings_or_exit", "setup_logging", "stop_on_signals"]

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
