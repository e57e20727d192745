"""``databus outbox``: run the outbox poller against a source system's database.

The lead wires ``run_outbox`` into ``databus.cli``; it reads ``DATABUS_OUTBOX__*`` (the
database URL, table, batch size, interval) and the usual Kafka/registry settings.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

import sqlalchemy as sa

from bus.errors import ConfigError
from bus.settings import Settings
from producers.outbox import OutboxPoller, create_outbox_table, outbox_table
from producers.publisher import Publisher

__all__ = ["run_outbox"]

log = logging.getLogger(__name__)


def run_outbox(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    create_table: bool = False,
    max_polls: int | None = None,
) -> int:
    """Poll the outbox until ``stop`` is set (or SIGINT/SIGTERM); returns an exit status.

    ``create_table`` creates the outbox table first (for a new source database).
    """
    cfg = settings.outbox
    if cfg.url is None:
        raise ConfigError("DATABUS_OUTBOX__URL is not set: the source database to poll")
    stop = stop or threading.Event()
    engine = sa.create_engine(cfg.url.get_secret_value(), pool_pre_ping=True)
    restore = _stop_on_signals(stop)
    try:
        if create_table:
            table = create_outbox_table(engine, cfg.table, schema=cfg.db_schema)
        else:
            table = outbox_table(cfg.table, schema=cfg.db_schema)
        with Publisher(settings, source_system=cfg.source_system) as publisher:
            poller = OutboxPoller(
                engine,
                publisher,
                table=table,
                batch_size=cfg.batch_size,
                interval_s=cfg.interval_s,
                flush_timeout_s=cfg.flush_timeout_s,
            )
            log.info("polling outbox table %s every %.1f s", table.fullname, cfg.interval_s)
            poller.run(stop, max_polls=max_polls)
            log.info("outbox: %d sent, %d refused", poller.sent_total, poller.failed_total)
    finally:
        restore()
        engine.dispose()
    return 0


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers can only be set from the main thread

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
