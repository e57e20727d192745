"""bus.logs: JSON lines, library levels, librdkafka's repeated errors summarised."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from bus import logs, tracing
from bus.errors import ConfigError
from bus.logs import RepeatSummary, bound, configure, faust_worker_options, kafka_client_logging
from bus.settings import LogSettings, load_settings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.LIBRARY_LEVELS}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)
    logs._configured_handler = None


def test_settings_default_text_and_refuse_a_bad_format(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().log.format == "text"
    monkeypatch.setenv("DATABUS_LOG__FORMAT", "JSON")
    monkeypatch.setenv("DATABUS_LOG__LEVEL", "debug")
    settings = load_settings()
    assert (settings.log.format, settings.log.level) == ("json", "DEBUG")
    monkeypatch.setenv("DATABUS_LOG__FORMAT", "xml")
    with pytest.raises(ConfigError, match="DATABUS_LOG__FORMAT"):
        load_settings()


def test_legacy_level_variable_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABUS_LOG__LEVEL", raising=False)
    monkeypatch.setenv("DATABUS_LOG_LEVEL", "WARNING")
    assert logs.log_settings_from_env().level == "WARNING"
    monkeypatch.setenv("DATABUS_LOG__LEVEL", "ERROR")
    assert logs.log_settings_from_env().level == "ERROR"
    monkeypatch.setenv("DATABUS_LOG__LEVEL", "LOUD")  # full settings report it
    assert logs.log_settings_from_env() == LogSettings()


def test_json_lines_carry_where_and_the_trace(restore_logging: None) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    out = io.StringIO()
    configure(LogSettings(format="json", level="INFO"), stream=out)
    log = logging.getLogger("databus.test")
    tracing.use(TracerProvider())
    try:
        span = tracing.start_span("process x")
        with bound(dataset="dossiers", event_id="e-1"), tracing_span(span):
            log.info("wrote %d records", 3, extra={"topic": "t.std"})
        span.end()
    finally:
        tracing.use(None)
    log.info("after")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "wrote 3 records"
    assert first["level"] == "INFO" and first["logger"] == "databus.test"
    assert first["time"].endswith("+00:00")  # ISO 8601, UTC
    assert (first["dataset"], first["event_id"], first["topic"]) == ("dossiers", "e-1", "t.std")
    ctx = span.get_span_context()
    assert first["trace_id"] == f"{ctx.trace_id:032x}"
    assert first["span_id"] == f"{ctx.span_id:016x}"
    assert "dataset" not in second and "trace_id" not in second


def tracing_span(span: tracing.Span):
    from opentelemetry import trace

    return trace.use_span(span, end_on_exit=False)


def test_text_stays_the_default_and_libraries_are_quiet(
    restore_logging: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABUS_LOG__FORMAT", raising=False)
    monkeypatch.delenv("DATABUS_FAUST_LOG_LEVEL", raising=False)
    out = io.StringIO()
    configure(stream=out)
    logging.getLogger("httpx").info("HTTP Request: GET http://registry/subjects 200")
    logging.getLogger("databus.x").info("hello")
    assert logging.getLogger("faust").level == logging.WARNING
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO databus.x: hello")
    # called again: one handler, not two
    configure(stream=out)
    assert sum(isinstance(h, logging.StreamHandler) for h in logging.getLogger().handlers) == 1


def test_faust_worker_keeps_our_logging_and_no_spinner_off_a_terminal() -> None:
    options = faust_worker_options(io.StringIO())
    assert options["quiet"] is True and options["override_logging"] is False


def test_repeat_summary_first_then_counts() -> None:
    now = [0.0]
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.repeat")
    logger.propagate = False
    logger.addHandler(Capture())
    summary = RepeatSummary(logger, every_s=10, clock=lambda: now[0])
    body = (
        "[thrd:h:1/bootstrap]: h:1/bootstrap: Connect to ipv4#h:1 failed: refused "
        "(after {}ms in state CONNECT)"
    )
    for i in range(100):
        now[0] = i * 0.25  # 25 s of errors
        summary.log(40, "%s [%s] %s", "FAIL", f"rdkafka#producer-{i % 3}", body.format(i))
    assert len(lines) == 3  # the first, then at 10 s and 20 s
    assert "repeated 40 times" in lines[1]
    summary.flush()
    assert "repeated 19 times" in lines[-1]


def test_an_unreachable_broker_gives_a_bounded_number_of_lines() -> None:
    """A producer retrying an unreachable broker every few ms: librdkafka reports each
    failure (log line and error callback); the summary logs a handful of lines."""
    lines: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record)

    logger = logging.getLogger("test.unreachable")
    logger.propagate = False
    logger.addHandler(Capture())
    summary = RepeatSummary(logger, every_s=1.0)
    seen: list[int] = []
    original = summary.note

    def counting(key: str, level: int, text: str) -> None:
        seen.append(level)
        original(key, level, text)

    summary.note = counting  # type: ignore[method-assign]
    # three clients, as a processor has (consumer, producers), sharing the summary
    producers = [
        Producer(
            {
                "bootstrap.servers": "127.0.0.1:1",
                "reconnect.backoff.ms": 5,
                "reconnect.backoff.max.ms": 20,
                **kafka_client_logging(summary),
            }
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 20
    started = time.monotonic()
    # until the reports outnumber the lines three to one (the summary's point), at least
    # 40 of them over 2 s; on a loaded machine reports come slower, so this may take longer
    while (
        len(seen) < 40 or time.monotonic() - started < 2.0 or len(lines) * 3 >= len(seen)
    ) and time.monotonic() < deadline:
        for producer in producers:
            producer.poll(0.02)
    elapsed = time.monotonic() - started
    for producer in producers:
        producer.flush(0)
    assert len(seen) >= 40, f"only {len(seen)} reports in {elapsed:.1f} s"
    text = "\n".join(r.getMessage() for r in lines)
    firsts = [r for r in lines if "repeated" not in r.getMessage()]
    # a few distinct messages (connection refused, all brokers down), each logged once,
    # then at most one count per message per second, however many clients report it
    assert len(firsts) <= 4, text
    assert len(lines) <= len(firsts) * (2 + int(elapsed)), text
    assert len(lines) < len(seen) / 3, text
    assert any("repeated" in r.getMessage() for r in lines)


def test_record_fields_say_where_never_what() -> None:
    headers = [
        ("ce_id", b"3f6c1a52-8d0e-4b7a-9c21-5e4d3b2a1f00"),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("ce_source", b"/databus/his/DNA.SYT"),
    ]
    assert logs.record_fields("health.encounters.std.v1", headers) == {
        "dataset": "health.encounters",
        "event_id": "3f6c1a52-8d0e-4b7a-9c21-5e4d3b2a1f00",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
    }
    assert logs.record_fields("odd", [("traceparent", b"garbage")]) == {}
