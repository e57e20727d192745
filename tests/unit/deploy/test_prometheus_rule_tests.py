"""deploy/prometheus/tests: every alert has promtool unit tests that fire it and that
expect it silent (steady state, recovery), and `promtool test rules` passes them.

The coverage checks read the YAML and always run; the promtool run is skipped, saying
so, where promtool is not on PATH (`.ci/run` installs Debian's ``prometheus`` package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "databus.rules.yml"
TESTS = sorted((PROM / "tests").glob("*.test.yml"))


def alert_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}


def alert_cases() -> list[dict[str, Any]]:
    cases = []
    for path in TESTS:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["rule_files"] == ["../rules/databus.rules.yml"], path.name
        for test in doc["tests"]:
            cases += test.get("alert_rule_test", [])
    return cases


def test_there_are_rule_tests() -> None:
    assert TESTS, "no deploy/prometheus/tests/*.test.yml"


def test_every_alert_is_tested_firing_and_silent() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in alert_cases():
        (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = alert_names()
    assert not alerts - fires, f"no test where these fire: {sorted(alerts - fires)}"
    assert not alerts - silent, f"no test where these stay silent: {sorted(alerts - silent)}"
    assert not (fires | silent) - alerts, f"tests of unknown alerts: {(fires | silent) - alerts}"


def test_expected_alerts_carry_the_annotations() -> None:
    """promtool compares annotations too: a test without them would expect none."""
    for case in alert_cases():
        for alert in case.get("exp_alerts") or []:
            assert set(alert["exp_annotations"]) == {"summary", "description", "runbook"}


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not on PATH: the Prometheus rule unit tests did not run "
    "(apt-get install prometheus)",
)
def test_promtool_test_rules() -> None:
    result = subprocess.run(
        ["promtool", "test", "rules", *map(str, TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
