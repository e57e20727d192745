"""The alert rules file: defaults, overrides, and bad files that stop start-up clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from bus.settings import AlertSettings, load_settings
from stream_processors.alerts.rules.config import (
    DEFAULT_RULES_FILE,
    RulesConfig,
    load_rules,
    rules_from_settings,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_packaged_file_loads_and_matches_the_defaults() -> None:
    assert DEFAULT_RULES_FILE.is_file()
    assert load_rules() == RulesConfig()


def test_a_partial_file_keeps_the_other_defaults(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, "[air_quality_aqi]\nconsecutive = 5\n"))
    assert rules.air_quality_aqi.consecutive == 5
    assert rules.dossier_overdue_rate == RulesConfig().dossier_overdue_rate


def test_rules_are_frozen() -> None:
    rules = load_rules()
    with pytest.raises(ValueError):
        rules.dossier_overdue_rate.raise_above = 0.9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[dossier_overdue_rate]\nraise_above = "high"\n',
            "rule 'dossier_overdue_rate': field 'raise_above'",
        ),
        ("[dossier_overdue_rate]\nclear_below = 0.5\n", "field 'clear_below'"),
        ("[air_quality_aqi]\ncritical_above = 120\n", "field 'critical_above'"),
        ("[dead_letter_share]\ncolour = 1\n", "rule 'dead_letter_share': field 'colour'"),
        ("[no_such_rule]\nenabled = true\n", "rule 'no_such_rule'"),
        ("[feedback_unanswered]\nby = ['district']\n", "field 'by.0'"),
        (
            "[disease_cases_above_baseline]\nclear_min_cases = 9\n",
            "field 'clear_min_cases'",
        ),
        ("[dossier_due_soon]\nworking_days = -1\n", "field 'working_days'"),
    ],
)
def test_bad_values_name_file_rule_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message


def test_not_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[dossier_overdue_rate\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_rules(path)


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_rules(tmp_path / "nope.toml")


def test_settings_name_the_rules_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[dossier_due_soon]\nworking_days = 4\n")
    monkeypatch.setenv("DATABUS_ALERTS__RULES_FILE", str(path))
    settings = load_settings()
    assert settings.alerts.rules_file == path
    assert rules_from_settings(settings.alerts).dossier_due_soon.working_days == 4


def test_empty_rules_file_setting_means_the_packaged_file() -> None:
    assert AlertSettings(rules_file="").rules_file is None  # type: ignore[arg-type]
    assert rules_from_settings(AlertSettings()) == load_rules()


def test_explicit_overdue_settings_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[dossier_overdue_rate]\nraise_above = 0.35\nmin_dossiers = 4\n")
    rules = rules_from_settings(
        AlertSettings(rules_file=path, overdue_rate_threshold=0.4, overdue_rate_clear=0.3)
    )
    cfg = rules.dossier_overdue_rate
    assert (cfg.raise_above, cfg.clear_below, cfg.min_dossiers) == (0.4, 0.3, 4)


def test_unset_overdue_settings_leave_the_file_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "[dossier_overdue_rate]\nraise_above = 0.35\n")
    assert rules_from_settings(AlertSettings(rules_file=path)).dossier_overdue_rate.raise_above == (
        0.35
    )


def test_an_override_that_breaks_the_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "[dossier_overdue_rate]\ncritical_at = 0.5\n")
    with pytest.raises(ConfigError, match=r"OVERDUE_RATE_THRESHOLD.*critical_at"):
        rules_from_settings(AlertSettings(rules_file=path, overdue_rate_threshold=0.6))
