"""The alert rules file: thresholds, hysteresis, windows and severities of every rule.

``stream_processors/alerts/rules/alert_rules.toml`` is the default (its comments document each
field); ``DATABUS_ALERTS__RULES_FILE`` names another one. One TOML table per rule, named
by the rule id; a rule or field left out takes the default below; an unknown rule or
field, a wrong type, or thresholds out of order (a clear threshold past the raise one,
a critical level below it) stop start-up with a ``ConfigError`` naming the file, the
rule and the field.

Hysteresis everywhere: a rule raises past ``raise_*`` and resolves only past
``clear_*``; in between an open alert holds and none is raised.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bus.errors import ConfigError
from bus.settings import AlertSettings

__all__ = [
    "DEFAULT_RULES_FILE",
    "AirQualityRule",
    "DatasetSilentRule",
    "DeadLetterShareRule",
    "DiseaseClusterRule",
    "DossierDueSoonRule",
    "DossierOverdueRule",
    "FeedbackUnansweredRule",
    "RulesConfig",
    "load_rules",
    "rules_from_settings",
]

DEFAULT_RULES_FILE = Path(__file__).with_name("alert_rules.toml")

_FROZEN = ConfigDict(frozen=True, extra="forbid")
Share = Annotated[float, Field(gt=0, lt=1)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class _Order(ValueError):
    """Thresholds out of order; ``field`` is the one reported."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _order(field: str, ok: bool, message: str) -> None:
    if not ok:
        raise _Order(field, message)


class _Rule(BaseModel):
    model_config = _FROZEN

    enabled: bool = True
    severity: Literal["WARNING", "CRITICAL"] = "WARNING"  # below the critical level
    # UPDATED for a value change at most this often (a severity rise is immediate).
    min_update_interval_minutes: NonNegative = 15.0
    # How far the value must move since the last record to be worth an UPDATED; 0: never.
    update_step: NonNegative = 0.0

    @property
    def min_update_interval_ms(self) -> int:
        return round(self.min_update_interval_minutes * 60_000)


class DossierOverdueRule(_Rule):
    """Overdue rate of a receiving unit's dossiers (docs/domain.md) over a rolling window."""

    window_days: PositiveInt = 30
    min_dossiers: PositiveInt = 10
    raise_above: Share = 0.30
    clear_below: Share = 0.25
    critical_at: Share = 0.60
    update_step: NonNegative = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _order("clear_below", self.clear_below <= self.raise_above, "must not exceed raise_above")
        _order("critical_at", self.critical_at > self.raise_above, "must exceed raise_above")
        return self


class _CountRule(_Rule):
    raise_at: PositiveInt
    clear_below: PositiveInt
    critical_at: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _order("clear_below", self.clear_below <= self.raise_at, "must not exceed raise_at")
        _order("critical_at", self.critical_at >= self.raise_at, "must be at least raise_at")
        return self


class DossierDueSoonRule(_CountRule):
    """Open dossiers of a unit due by the end of the N-th working day from today."""

    working_days: Annotated[int, Field(ge=0, le=30)] = 2
    raise_at: PositiveInt = 20
    clear_below: PositiveInt = 15
    critical_at: PositiveInt = 50
    update_step: NonNegative = 10


class FeedbackUnansweredRule(_CountRule):
    """Citizen reports still unanswered past their response deadline (counts)."""

    by: tuple[Literal["unit", "commune"], ...] = ("unit",)
    window_days: PositiveInt = 30  # for the answered on time / late evidence
    raise_at: PositiveInt = 5
    clear_below: PositiveInt = 3
    critical_at: PositiveInt = 20
    update_step: NonNegative = 5


class AirQualityRule(_Rule):
    """VN_AQI of an air station above a level for N consecutive readings."""

    raise_above: Annotated[int, Field(ge=0, le=500)] = 150  # 151–200: "xấu" (poor)
    consecutive: Annotated[int, Field(ge=1, le=100)] = 3
    clear_at_or_below: Annotated[int, Field(ge=0, le=500)] = 100
    clear_consecutive: Annotated[int, Field(ge=1, le=100)] = 3
    critical_above: Annotated[int, Field(ge=0, le=500)] = 200  # 201–300: "rất xấu"
    keep_readings: Annotated[int, Field(ge=1, le=1000)] = 24
    # Readings older than this behind the station's newest are dropped on arrival.
    max_lateness_minutes: PositiveInt = 180
    # No reading for this long: the alert resolves ("no recent readings").
    stale_after_minutes: PositiveInt = 180
    update_step: NonNegative = 50

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _order(
            "clear_at_or_below",
            self.clear_at_or_below <= self.raise_above,
            "must not exceed raise_above",
        )
        _order(
            "critical_above",
            self.critical_above >= self.raise_above,
            "must be at least raise_above",
        )
        _order(
            "keep_readings",
            self.keep_readings >= max(self.consecutive, self.clear_consecutive),
            "must be at least consecutive and clear_consecutive",
        )
        return self


class DiseaseClusterRule(_Rule):
    """Notifiable cases in a commune over a window vs k × its baseline."""

    window_days: Annotated[int, Field(ge=1, le=28)] = 7
    baseline_weeks: Annotated[int, Field(ge=1, le=52)] = 4
    factor: Annotated[float, Field(gt=1)] = 2.0
    clear_factor: Annotated[float, Field(gt=0)] = 1.5
    critical_factor: Annotated[float, Field(gt=1)] = 4.0
    min_cases: PositiveInt = 5
    clear_min_cases: PositiveInt = 3
    # Expected cases per window never taken below this (a commune with no history).
    baseline_floor: NonNegative = 1.0
    diseases: tuple[str, ...] = ()  # ICD-10 codes counted; empty: every notifiable disease
    update_step: NonNegative = 3

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _order("clear_factor", self.clear_factor <= self.factor, "must not exceed factor")
        _order("critical_factor", self.critical_factor >= self.factor, "must be at least factor")
        _order(
            "clear_min_cases", self.clear_min_cases <= self.min_cases, "must not exceed min_cases"
        )
        return self


class DatasetSilentRule(_Rule):
    """A dataset from a unit silent past its catalog update obligation."""

    grace_minutes: NonNegative = 0
    critical_after_hours: Annotated[float, Field(gt=0)] = 24


class DeadLetterShareRule(_Rule):
    """Share of a source's events dead-lettered over a window, with a minimum volume."""

    window_hours: Annotated[int, Field(ge=1, le=24 * 14)] = 24
    min_received: PositiveInt = 100
    raise_above: Share = 0.05
    clear_below: Share = 0.03
    critical_at: Share = 0.20
    update_step: NonNegative = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        _order("clear_below", self.clear_below <= self.raise_above, "must not exceed raise_above")
        _order("critical_at", self.critical_at > self.raise_above, "must exceed raise_above")
        return self


class RulesConfig(BaseModel):
    model_config = _FROZEN

    dossier_overdue_rate: DossierOverdueRule = DossierOverdueRule()
    dossier_due_soon: DossierDueSoonRule = DossierDueSoonRule()
    feedback_unanswered: FeedbackUnansweredRule = FeedbackUnansweredRule()
    air_quality_aqi: AirQualityRule = AirQualityRule()
    disease_cases_above_baseline: DiseaseClusterRule = DiseaseClusterRule()
    dataset_silent: DatasetSilentRule = DatasetSilentRule()
    dead_letter_share: DeadLetterShareRule = DeadLetterShareRule()


def _problems(source: str, exc: ValidationError) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _Order):
            loc.append(ctx_error.field)
            msg = str(ctx_error)
        else:
            msg = err["msg"]
        if not loc:
            lines.append(f"{source}: {msg}")
        elif len(loc) == 1:
            lines.append(f"{source}: rule {loc[0]!r}: {msg}")
        else:
            lines.append(f"{source}: rule {loc[0]!r}: field {'.'.join(loc[1:])!r}: {msg}")
    return ConfigError("invalid alert rules:\n  " + "\n  ".join(lines))


def _validate(source: str, document: dict[str, Any]) -> RulesConfig:
    try:
        return RulesConfig.model_validate(document)
    except ValidationError as exc:
        raise _problems(source, exc) from exc


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the alert rules: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_rules(path: Path | None = None) -> RulesConfig:
    """The rules of ``path`` (default: the packaged ``alert_rules.toml``)."""
    source = DEFAULT_RULES_FILE if path is None else path
    return _validate(str(source), _read(source))


# AlertSettings field → dossier_overdue_rate field, applied only when set explicitly.
_OVERDUE_OVERRIDES = {
    "overdue_rate_threshold": "raise_above",
    "overdue_rate_clear": "clear_below",
    "window_days": "window_days",
    "min_dossiers": "min_dossiers",
}


def rules_from_settings(settings: AlertSettings) -> RulesConfig:
    """The rules file of ``settings`` (an ``AlertSettings``), with the overdue thresholds
    set explicitly in the environment (``DATABUS_ALERTS__OVERDUE_RATE_THRESHOLD``, …)
    overriding the file's ``dossier_overdue_rate`` values."""
    source = settings.rules_file or DEFAULT_RULES_FILE
    document = _read(source)
    overrides = {
        rule_field: getattr(settings, name)
        for name, rule_field in _OVERDUE_OVERRIDES.items()
        if name in settings.model_fields_set
    }
    if overrides:
        table = document.setdefault("dossier_overdue_rate", {})
        if isinstance(table, dict):
            table.update(overrides)
        names = ", ".join(f"DATABUS_ALERTS__{n.upper()}" for n in _OVERDUE_OVERRIDES)
        return _validate(f"{source} (with {names} applied)", document)
    return _validate(str(source), document)
