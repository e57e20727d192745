"""deploy/grafana: the four dashboards exist, are well-formed, point at the provisioned
data source and query only metrics the code exports. JSON only: no YAML parser needed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from deploy_names import exported_metric_names, series_names

from bus.metrics import Metrics

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
REQUIRED = {
    "databus-pipeline": "pipeline overview",
    "databus-dataset-quality": "dataset freshness and quality",
    "databus-delivery-ledger": "delivery ledger",
    "databus-sinks": "sinks",
}


def provisioned_datasource_uids() -> set[str]:
    uids = set()
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.yaml"):
        uids |= set(re.findall(r"^\s+uid:\s*(\S+)\s*$", path.read_text(encoding="utf-8"), re.M))
    return uids


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found += panel.get("panels", [])  # collapsed rows keep their panels inside
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating query."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query":
            # label_values(SERIES, LABEL): the second argument is a label, not a series
            series = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", str(text).strip())
            found.append((f"variable {variable['name']}", series))
    return found


@pytest.fixture(scope="module", params=[p.name for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GRAFANA / "dashboards" / request.param).read_text("utf-8"))
    return doc


def test_the_four_dashboards_exist_with_unique_uids() -> None:
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARDS]
    uids = [d["uid"] for d in docs]
    assert len(uids) == len(set(uids))
    assert set(REQUIRED) <= set(uids)
    for doc in docs:
        assert doc["title"].strip() and len(doc["uid"]) <= 40


def test_one_provisioned_datasource() -> None:
    assert provisioned_datasource_uids() == {"databus-prometheus"}


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']!r} has no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_every_datasource_reference_resolves(dashboard: dict[str, Any]) -> None:
    uids = provisioned_datasource_uids()
    refs = []
    for panel in panels(dashboard):
        if "datasource" in panel:
            refs.append(panel["datasource"])
        refs += [t["datasource"] for t in panel.get("targets", []) if "datasource" in t]
    refs += [v["datasource"] for v in dashboard["templating"]["list"] if "datasource" in v]
    assert refs
    for ref in refs:
        assert ref["type"] == "prometheus" and ref["uid"] in uids, ref


def test_queries_use_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    found = queries(dashboard)
    assert found
    for where, expr in found:
        used = set(re.findall(r"\bdatabus_[a-z0-9_]+", expr))
        assert series_names(expr), f"{dashboard['uid']} {where}: queries no series"
        assert used <= exported, f"{where}: not exported: {sorted(used - exported)}"
        unknown = series_names(expr) - exported
        assert not unknown, f"{dashboard['uid']} {where}: unknown series {sorted(unknown)}"


def test_template_variables_are_used(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(expr for _, expr in queries(dashboard))
    for variable in dashboard["templating"]["list"]:
        assert f"${variable['name']}" in exprs, variable["name"]


def exported_label_names() -> dict[str, set[str]]:
    """Series name -> the labels it carries (plus what Prometheus adds on scrape)."""
    scrape = {"job", "instance"}
    out: dict[str, set[str]] = {"up": scrape}
    for value in vars(Metrics()).values():
        name, labels = getattr(value, "_name", None), getattr(value, "_labelnames", None)
        if name is None or labels is None:
            continue
        kind = getattr(value, "_type", "")
        if kind == "counter":
            suffixes = ["_total", "_created"]
        elif kind == "histogram":
            suffixes = ["_bucket", "_sum", "_count", "_created"]
        else:
            suffixes = [""]
        for suffix in suffixes:
            out[name + suffix] = set(labels) | scrape | ({"le"} if suffix == "_bucket" else set())
    return out


def selector_labels(expr: str) -> list[tuple[str, set[str]]]:
    """(series, label names matched) of every ``series{...}`` selector."""
    found = []
    for match in re.finditer(r"\b([a-z_][a-z0-9_]*)\{([^}]*)\}", expr):
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2)))
        found.append((match.group(1), labels))
    return found


def test_selector_extraction() -> None:
    expr = 'sum(rate(a_total{sink=~"$sink", kind="x"}[5m])) / b{dataset!="y"}'
    assert selector_labels(expr) == [("a_total", {"sink", "kind"}), ("b", {"dataset"})]


def test_queries_select_only_labels_the_metrics_have(dashboard: dict[str, Any]) -> None:
    labels = exported_label_names()
    for where, expr in queries(dashboard):
        for series, used in selector_labels(expr):
            if series in labels:
                unknown = used - labels[series]
                assert not unknown, f"{dashboard['uid']} {where}: {series} has no {unknown}"


# --- a healthy bus shows 0, not "No data" ------------------------------------------------

_FALLBACK = re.compile(r"\bor(?: on \(\))? vector\(0\)$")


def counter_panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target that reads a counter, and of every stat
    or bar gauge that sums or counts: each may find no series on a healthy bus."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            counter = re.search(r"\bdatabus_[a-z0-9_]+_total\b", expr)
            summed = panel["type"] in ("stat", "bargauge") and re.match(r"(sum|count)\(", expr)
            if (counter or summed) and not expr.startswith("count(up"):
                found.append((f"{dashboard['uid']} panel {panel['title']!r}", expr))
    return found


def test_counter_panels_fall_back_to_zero(dashboard: dict[str, Any]) -> None:
    """A counter (or a sum of gauges) with no series yet shows 0: ``or vector(0)``, or
    ``or on () vector(0)`` after a ``by``, so the 0 appears only when nothing else does."""
    for where, expr in counter_panel_queries(dashboard):
        assert _FALLBACK.search(expr), f"{where}: no `or vector(0)` fallback: {expr}"
        if re.match(r"\(?(sum|count|topk)\b(?: by \(|\(\d)", expr):  # grouped at the top
            assert expr.endswith("or on () vector(0)"), f"{where}: grouped, needs `on ()`"


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not on PATH: the dashboards' queries were not evaluated "
    "(apt-get install prometheus)",
)
def test_counter_panels_show_zero_with_no_series(tmp_path: Path) -> None:
    """promtool evaluates every such query with no databus series at all (the worst
    case: a bus just started): each gives exactly one sample, 0."""
    exprs = sorted(
        {
            re.sub(r'"\$\w+"', '".*"', expr)  # a template variable: match everything
            for path in DASHBOARDS
            for _, expr in counter_panel_queries(json.loads(path.read_text("utf-8")))
        }
    )
    rules = tmp_path / "none.rules.yml"
    rules.write_text("groups: []\n", encoding="utf-8")
    test = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": 'up{job="databus-processor"}', "values": "1x90"}],
                "promql_expr_test": [
                    {"expr": e, "eval_time": "80m", "exp_samples": [{"labels": "{}", "value": 0}]}
                    for e in exprs
                ],
            }
        ],
    }
    path = tmp_path / "dashboards.test.yml"
    path.write_text(json.dumps(test), encoding="utf-8")
    result = subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(exprs) >= 20
