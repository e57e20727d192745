"""What the deploy files may refer to, taken from the code: settings variables, CLI
commands, exported metric names; and the series names a PromQL expression uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from bus.metrics import Metrics
from bus.settings import Settings

ROOT = Path(__file__).resolve().parents[3]

# Identifiers in PromQL that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "topk", "bottomk", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "rate", "increase", "irate", "deriv",
    "delta", "absent", "histogram_quantile", "time", "bool", "offset", "vector", "scalar",
    "label_values", "clamp_min", "clamp_max", "humanize", "le", "inf", "nan",
}  # fmt: skip


def setting_env_names(model: type[Any] = Settings, prefix: str = "DATABUS_") -> set[str]:
    """Every environment variable the settings read: fields, nested groups joined by __."""
    names = set()
    for field_name, field in model.model_fields.items():
        name = prefix + field_name.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            names |= setting_env_names(annotation, name + "__")
        else:
            names.add(name)
    return names


def directly_read_env_names() -> set[str]:
    """DATABUS_* variables the code reads with os.environ/getenv outside the settings."""
    pattern = re.compile(r"(?:environ\.get|getenv|environ\[)\(?\s*\"(DATABUS_[A-Z0-9_]+)\"")
    names = set()
    for package in ("bus", "databus", "sinks", "stream_processors", "producers", "schemas"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return names


def resolves_to_cli_command(argv: list[str]) -> bool:
    """Whether ``databus ARGV...`` names a command (typer vendors its own click: duck-type)."""
    from databus.cli import app

    command: Any = typer.main.get_command(app)
    for word in argv:
        subcommands = getattr(command, "commands", None)
        if word.startswith("-") or subcommands is None:
            break
        if word not in subcommands:
            return False
        command = subcommands[word]
    return getattr(command, "commands", None) is None


def exported_metric_names() -> set[str]:
    """The series names a fresh ``Metrics()`` registry can expose, plus Prometheus's ``up``."""
    names = {"up"}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def series_names(expr: str) -> set[str]:
    """Identifiers that stand for series: not functions, keywords, labels or strings."""
    stripped = re.sub(r"\$\{?\w+\}?", "", expr)  # dashboard variables ($unit, $__interval)
    stripped = re.sub(r'"[^"]*"', '""', stripped)  # label values
    stripped = re.sub(r"\{[^}]*\}", "{}", stripped)  # label matchers
    stripped = re.sub(r"\[[^\]]*\]", "[]", stripped)  # ranges
    stripped = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", stripped
    )
    stripped = re.sub(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b", " ", stripped)  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", stripped):
        word = match.group(0)
        after = stripped[match.end() :].lstrip()[:1]
        if word.lower() in PROMQL_WORDS or after == "(":
            continue
        names.add(word)
    return names
