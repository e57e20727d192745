"""Logs an operator can search: text or JSON lines, quiet libraries, librdkafka summarised.

``configure(LogSettings)`` sets the root logger up once per process:

- ``DATABUS_LOG__FORMAT=text`` (default): ``time level logger: message``;
  ``json``: one JSON object per line (python-json-logger) with ``time``, ``level``,
  ``logger``, ``message`` and, where known, ``dataset``, ``event_id``, ``trace_id`` and
  ``span_id`` (the current OpenTelemetry span; fields bound with :func:`bound`; or a
  call's ``extra=``). The bus never logs payload values, citizen ids or names: fields
  say where (dataset, topic, partition, offset, event id), never what.
- Libraries log at sane levels: ``httpx``/``httpcore`` (and the registry client's
  ``httpx2``/``httpcore2``) at WARNING (no INFO line per
  registry call), ``aiokafka``, ``faust`` and ``mode`` at WARNING
  (``DATABUS_FAUST_LOG_LEVEL`` overrides the last two).
- librdkafka's log lines and error callbacks go through one :class:`RepeatSummary`
  (:func:`kafka_client_logging`): the first occurrence of a message is logged, then one
  line per ``DATABUS_LOG__REPEAT_EVERY_S`` with how many times it came again, instead of
  one ``%3|...|FAIL|`` line per reconnect attempt.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pydantic import ValidationError as PydanticValidationError
from pythonjsonlogger.json import JsonFormatter

from bus.settings import LogSettings
from bus.tracing import current_ids

__all__ = [
    "LIBRARY_LEVELS",
    "ContextFilter",
    "RepeatSummary",
    "bound",
    "configure",
    "faust_worker_options",
    "json_formatter",
    "kafka_client_logging",
    "log_settings_from_env",
    "record_fields",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

LIBRARY_LEVELS: dict[str, int] = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    # the schema registry client's own copies of httpx and httpcore
    "httpx2": logging.WARNING,
    "httpcore2": logging.WARNING,
    "aiokafka": logging.WARNING,
    "faust": logging.WARNING,
    "mode": logging.WARNING,
    "urllib3": logging.WARNING,
    "opentelemetry": logging.WARNING,
    "grpc": logging.WARNING,
}
"""Levels of third-party loggers (``faust`` and ``mode``: ``DATABUS_FAUST_LOG_LEVEL``)."""

_FAUST_LOGGERS = ("faust", "mode")

# Fields a log call may bind for the lines it causes (where, never what).
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "databus_log_context", default=None
)


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (dataset, event_id, topic, ...) to every line logged inside."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the bound fields and the current trace's ids on each record (never replacing
    what a call passed in ``extra=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        if not hasattr(record, "trace_id"):
            ids = current_ids()
            if ids is not None:
                record.trace_id, record.span_id = ids
        return True


def record_fields(
    topic: str, headers: Iterable[tuple[str, bytes | str | None]] | None
) -> dict[str, str]:
    """The ``extra=`` of a line about one record: its dataset (from the topic), event id
    (``ce_id``) and trace id (``traceparent``) where it has them — where, never what."""
    fields = {"dataset": topic.rsplit(".", 2)[0]} if topic.count(".") >= 2 else {}
    for name, value in headers or ():
        if name not in ("ce_id", "traceparent") or not value:
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if name == "ce_id":
            fields["event_id"] = text[:64]
        elif len(parts := text.split("-")) >= 3 and len(parts[1]) == 32:
            fields["trace_id"] = parts[1]
    return fields


class _TimeFirst(JsonFormatter):
    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {"time": log_data.pop("time", None), **log_data}


def json_formatter() -> logging.Formatter:
    """One JSON object per line: time, level, logger, message, then the record's extras."""
    return _TimeFirst(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC
    )


def log_settings_from_env() -> LogSettings:
    """``DATABUS_LOG__*`` alone, before the full settings are read: a bad value falls back
    to the defaults here (the full settings then stop start-up naming the variable).
    ``DATABUS_LOG_LEVEL`` is still read when ``DATABUS_LOG__LEVEL`` is not set."""
    values: dict[str, Any] = {}
    for name in LogSettings.model_fields:
        raw = os.environ.get(f"DATABUS_LOG__{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
    legacy = os.environ.get("DATABUS_LOG_LEVEL")
    if "level" not in values and legacy:
        values["level"] = legacy
    try:
        return LogSettings.model_validate(values)
    except PydanticValidationError:
        return LogSettings()


_configured_handler: logging.Handler | None = None


def configure(
    settings: LogSettings | None = None, *, stream: Any = None, default_level: str | None = None
) -> logging.Handler:
    """Set the root logger up for ``settings`` (the environment's when None): one handler
    on ``stream`` (stderr), text or JSON, libraries at :data:`LIBRARY_LEVELS`. Called
    again, it replaces the handler it installed before. ``default_level``: the level when
    no variable sets one."""
    global _configured_handler
    if settings is None:
        settings = log_settings_from_env()
        if default_level is not None and not _level_set_in_env():
            settings = settings.model_copy(update={"level": default_level.upper()})
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(
        json_formatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    if _configured_handler is not None:
        root.removeHandler(_configured_handler)
    else:
        # what basicConfig or an earlier library set up would print every line twice
        for old in list(root.handlers):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.level)
    _configured_handler = handler
    faust_level = os.environ.get("DATABUS_FAUST_LOG_LEVEL", "").upper() or None
    for name, level in LIBRARY_LEVELS.items():
        chosen: int | str = faust_level if faust_level and name in _FAUST_LOGGERS else level
        logging.getLogger(name).setLevel(chosen)
    summary = RepeatSummary.default()
    summary.every_s = settings.repeat_every_s
    if not summary.flush_at_exit:
        summary.flush_at_exit = True
        atexit.register(summary.flush)  # the counts not logged yet, at exit
    return handler


def _level_set_in_env() -> bool:
    return bool(os.environ.get("DATABUS_LOG__LEVEL") or os.environ.get("DATABUS_LOG_LEVEL"))


def faust_worker_options(stdout: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``faust.Worker``: the logging :func:`configure` set up is kept
    (no colour codes, no second handler), and no console output (the spinner, its ANSI
    escape codes, the banner) unless standard output is a terminal and logs are text."""
    out = stdout if stdout is not None else sys.stdout
    try:
        tty = bool(out.isatty())
    except (AttributeError, ValueError):
        tty = False
    text = log_settings_from_env().format == "text"
    return {
        "loglevel": os.environ.get("DATABUS_FAUST_LOG_LEVEL", "WARNING"),
        "redirect_stdouts": False,
        "override_logging": False,
        "quiet": not (tty and text),
    }


# ---- librdkafka: the first occurrence, then a count per interval

# Parts of a librdkafka message that change between identical errors: the thread
# prefix of a log line (an error callback's text has none) and the timing suffix.
_VARYING = re.compile(
    r"^\[thrd:[^\]]*\]:\s*"
    r"|\s*\(after \d+ms in state \w+(?:, \d+ identical error\(s\) suppressed)?\)"
)
_MAX_KEYS = 1024
# syslog levels (librdkafka's) to logging's
_SYSLOG = {
    0: logging.CRITICAL,
    1: logging.CRITICAL,
    2: logging.CRITICAL,
    3: logging.ERROR,
    4: logging.WARNING,
    5: logging.INFO,
    6: logging.INFO,
    7: logging.DEBUG,
}


class RepeatSummary:
    """Logs the first occurrence of a message, then, at most once per ``every_s`` for each
    message still repeating, one line with the count since the last line.

    It is what confluent-kafka clients get as ``logger`` (its ``log`` method is called
    with librdkafka's lines) and, through :meth:`error_cb`, as ``error_cb``. Thread-safe:
    clients call it from their own threads.
    """

    _default: RepeatSummary | None = None

    def __init__(
        self,
        logger: logging.Logger | None = None,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger or logging.getLogger("bus.kafka")
        self.every_s = every_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [count since last line, last line's time, level, latest text]
        self._seen: dict[str, list[Any]] = {}
        self._kafka_logger: _KafkaLogger | None = None
        self.flush_at_exit = False

    @classmethod
    def default(cls) -> RepeatSummary:
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def log(self, level: int, msg: str, *args: Any, **_kwargs: Any) -> None:
        """``logging.Logger.log``'s signature: what librdkafka's log callback calls (with
        ``"%s [%s] %s"``, facility, client name, text)."""
        text = msg % args if args else msg
        # librdkafka's: facility, client name, text; keyed on the text alone, so that
        # every client's identical error, and the error callback's, count as one
        body = str(args[2]) if len(args) == 3 else text
        self.note(_VARYING.sub("", body), level, text)

    def error_cb(self, err: Any) -> None:
        """A client's ``error_cb``: a ``KafkaError``, summarised like the log lines."""
        try:
            name, text, fatal = err.name(), err.str(), err.fatal()
        except AttributeError:
            name, text, fatal = type(err).__name__, str(err), False
        level = logging.ERROR if fatal else logging.WARNING
        self.note(_VARYING.sub("", text), level, f"{name}: {text}")

    def note(self, key: str, level: int, text: str) -> None:
        now = self._clock()
        emit: list[tuple[int, str]] = []
        with self._lock:
            entry = self._seen.get(key)
            if entry is None:
                if len(self._seen) >= _MAX_KEYS:  # forget what is not repeating
                    self._seen = {k: e for k, e in self._seen.items() if e[0]}
                self._seen[key] = [0, now, level, text]
                emit.append((level, text))
            else:
                entry[0] += 1
                entry[2], entry[3] = level, text
            emit += self._due(now)
        for lvl, line in emit:
            self.logger.log(lvl, "%s", line)

    def _due(self, now: float) -> list[tuple[int, str]]:
        out = []
        for entry in self._seen.values():
            count, last, level, text = entry
            if count and now - last >= self.every_s:
                out.append(
                    (level, f"{text} (repeated {count} times in the last {now - last:.0f} s)")
                )
                entry[0], entry[1] = 0, now
        return out

    def flush(self) -> None:
        """Log the counts not logged yet (on close), whatever their age."""
        with self._lock:
            out = []
            for entry in self._seen.values():
                count, _last, level, text = entry
                if count:
                    out.append((level, f"{text} (repeated {count} times)"))
                    entry[0], entry[1] = 0, self._clock()
        for lvl, line in out:
            self.logger.log(lvl, "%s", line)


def _librdkafka_level(level: int) -> int:
    return _SYSLOG.get(level, level)


class _KafkaLogger:
    """The object confluent-kafka calls ``log(level, fmt, *args)`` on: librdkafka's syslog
    level made a logging level, then summarised."""

    def __init__(self, summary: RepeatSummary) -> None:
        self._summary = summary

    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self._summary.log(_librdkafka_level(level), msg, *args, **kwargs)


def kafka_client_logging(summary: RepeatSummary | None = None) -> dict[str, Any]:
    """``logger`` and ``error_cb`` of a confluent-kafka client, through ``summary`` (the
    process's by default). Merged into every client's configuration by
    ``KafkaSettings.client_config``."""
    s = summary or RepeatSummary.default()
    if s._kafka_logger is None:
        s._kafka_logger = _KafkaLogger(s)
    return {"logger": s._kafka_logger, "error_cb": s.error_cb}
