"""deploy/prometheus and deploy/alertmanager: the rules cover the alerts issue 6 asks for,
use only metrics the code exports, and carry what an operator needs (for, severity,
summary, description, runbook). `promtool`/`amtool` check the files when installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_names import exported_metric_names, series_names

from bus.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
RULES = PROM / "rules" / "databus.rules.yml"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
README = ROOT / "deploy" / "README.md"

REQUIRED_ALERTS = {
    "DatabusSinkLagGrowing",  # lag growing
    "DatabusDeadLetterShareHigh",  # DLQ share high
    "DatabusDatasetStale",  # a dataset stale past its obligation
    "DatabusSinkCircuitOpen",  # a sink circuit open
    "DatabusWorkerDown",  # a worker down
}


# Identifiers in PromQL that are not metric names.
def recorded_names(text: str) -> set[str]:
    return set(re.findall(r"^\s*- record:\s*(\S+)", text, flags=re.MULTILINE))


def expressions(text: str) -> list[str]:
    """The PromQL of every `expr:` (one line or a `|` block)."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        indent, rest = len(match.group(1)), match.group(2)
        if rest in ("|", ">", "|-", ">-"):
            block = []
            for following in lines[i + 1 :]:
                if following.strip() and len(following) - len(following.lstrip()) <= indent:
                    break
                block.append(following.strip())
            found.append(" ".join(block))
        else:
            found.append(rest)
    return found


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    assert yaml is not None
    rules: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return rules


def all_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"]]


# --- text checks (no YAML parser needed) -------------------------------------------------


def test_exported_names_include_suffixes() -> None:
    names = exported_metric_names()
    assert "databus_events_consumed_total" in names
    assert "databus_processing_seconds_bucket" in names
    assert "databus_dataset_live" in names
    assert "databus_events_consumed" not in names


def test_series_name_extraction() -> None:
    expr = 'sum by (sink) (rate(databus_x_total{kind="a b"}[5m])) / on (sink) databus:y:sum > 0'
    assert series_names(expr) == {"databus_x_total", "databus:y:sum"}
    expr = "histogram_quantile(0.5, sum by (le) (rate(a_bucket[5m]))) - time() - b offset 5m"
    assert series_names(expr) == {"a_bucket", "b"}


def test_rules_use_only_exported_metrics_and_recorded_series() -> None:
    text = RULES.read_text(encoding="utf-8")
    exprs = expressions(text)
    assert len(exprs) >= len(REQUIRED_ALERTS)
    exported, recorded = exported_metric_names(), recorded_names(text)
    for expr in exprs:
        used = set(re.findall(r"\bdatabus_[a-z0-9_]+", expr))
        assert used <= exported, f"not exported by bus/metrics.py: {sorted(used - exported)}"
        unknown = series_names(expr) - exported - recorded
        assert not unknown, f"{expr}: unknown series {sorted(unknown)}"


def test_prometheus_loads_the_rules_directory() -> None:
    text = (PROM / "prometheus.yml").read_text(encoding="utf-8")
    (pattern,) = re.findall(r"^\s+- (/etc/prometheus/\S+)", text, flags=re.MULTILINE)
    local = pattern.replace("/etc/prometheus/", "")
    assert RULES in PROM.glob(local)


def test_runbook_hints_name_readme_sections() -> None:
    text = RULES.read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8").lower()
    hints = re.findall(r"runbook: \"deploy/README\.md, Runbook: ([^—\"]+?) —", text)
    assert len(hints) == text.count("- alert:")
    for hint in hints:
        assert f"### {hint.strip().lower()}" in readme, hint


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (["check", "rules", str(RULES)], ["check", "config", str(PROM / "prometheus.yml")]):
        result = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# --- structure -------------------------------------------------------------------------


def test_required_alerts_exist(rules: dict[str, Any]) -> None:
    alerts = {r["alert"] for r in all_rules(rules) if "alert" in r}
    assert alerts >= REQUIRED_ALERTS


def test_every_alert_has_for_severity_and_annotations(rules: dict[str, Any]) -> None:
    names = [g["name"] for g in rules["groups"]]
    assert len(names) == len(set(names))
    for rule in all_rules(rules):
        assert ("alert" in rule) != ("record" in rule)
        if "record" in rule:
            assert re.fullmatch(r"databus:[a-z0-9_]+:[a-z0-9_]+", rule["record"])
            continue
        where = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), where
        assert rule["labels"]["severity"] in {"warning", "critical"}, where
        for key in ("summary", "description", "runbook"):
            assert str(rule["annotations"].get(key, "")).strip(), f"{where}: no {key}"


def test_worker_down_covers_the_scrape_jobs(rules: dict[str, Any]) -> None:
    assert yaml is not None
    config = yaml.safe_load((PROM / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = [j["job_name"] for j in config["scrape_configs"]]
    (down,) = [r for r in all_rules(rules) if r.get("alert") == "DatabusWorkerDown"]
    (regex,) = re.findall(r'job=~"([^"]+)"', down["expr"])
    workers = [j for j in jobs if j.startswith("databus-") and j != "databus-publishers"]
    assert len(workers) == 4
    assert all(re.fullmatch(regex, j) for j in workers)
    assert 'job="databus-processor"' in next(
        r["expr"] for r in all_rules(rules) if r.get("alert") == "DatabusProcessorAbsent"
    )


def test_alertmanager_routes_and_inhibitions_resolve(rules: dict[str, Any]) -> None:
    assert yaml is not None
    config = yaml.safe_load(ALERTMANAGER.read_text(encoding="utf-8"))
    receivers = {r["name"] for r in config["receivers"]}
    routes = [config["route"], *config["route"].get("routes", [])]
    assert all(route.get("receiver", config["route"]["receiver"]) in receivers for route in routes)
    alerts = {r["alert"] for r in all_rules(rules) if "alert" in r}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            match = re.fullmatch(r'alertname(=~|=)"([^"]+)"', matcher)
            assert match, matcher
            op, value = match.group(1, 2)
            named = value.split("|") if op == "=~" else [value]
            assert set(named) <= alerts, matcher
    # The webhook address is a secret file, never a value in the file.
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert "url" not in hook and hook["url_file"].startswith("/run/secrets/")


def test_rules_select_only_labels_the_metrics_have() -> None:
    scrape = {"job", "instance"}
    labels: dict[str, set[str]] = {"up": scrape}
    for value in vars(Metrics()).values():
        name, names = getattr(value, "_name", None), getattr(value, "_labelnames", None)
        if name is not None and names is not None:
            for suffix in ("", "_total", "_bucket", "_sum", "_count"):
                labels[name + suffix] = set(names) | scrape
            labels[name + "_bucket"].add("le")
    for expr in expressions(RULES.read_text(encoding="utf-8")):
        for match in re.finditer(r"\b(databus_[a-z0-9_]+|up)\{([^}]*)\}", expr):
            used = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", match.group(2)))
            unknown = used - labels[match.group(1)]
            assert not unknown, f"{expr}: {match.group(1)} has no {sorted(unknown)}"
