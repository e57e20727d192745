"""`databus catalog validate|list` and `databus schemas register` as a user runs them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from databus_cli import run_databus

from schemas.catalog import CATALOG_FILE, DATASETS

pytestmark = pytest.mark.integration


def databus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_databus(None, *args, **(env or {}))


def test_validate_the_shipped_catalog() -> None:
    result = databus("catalog", "validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(DATASETS)} datasets" in result.stdout


def test_validate_reports_a_broken_catalog(tmp_path: Path) -> None:
    text = CATALOG_FILE.read_text(encoding="utf-8")
    broken = text.replace('key = ["dossier_id"]', 'key = ["no_such_field"]', 1)
    assert broken != text
    path = tmp_path / "catalog.toml"
    path.write_text(broken, encoding="utf-8")
    result = databus("catalog", "validate", "--file", str(path))
    assert result.returncode == 1
    assert "publicservice.dossiers" in result.stdout
    assert "no_such_field" in result.stdout


def test_list_shows_every_dataset() -> None:
    result = databus("catalog", "list")
    assert result.returncode == 0
    for dataset_id in DATASETS:
        assert dataset_id[:20] in result.stdout


def test_register_is_idempotent(registry_url: str) -> None:
    env = {"DATABUS_SCHEMA_REGISTRY__URL": registry_url}
    first = databus("schemas", "register", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    second = databus("schemas", "register", env=env)
    assert second.returncode == 0
    assert second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]
    ids = [line.rsplit("id ", 1)[1] for line in second.stdout.splitlines() if " id " in line]
    first_ids = [line.rsplit("id ", 1)[1] for line in first.stdout.splitlines() if " id " in line]
    assert ids and ids == first_ids


def test_register_without_a_registry_says_what_to_set() -> None:
    result = databus("schemas", "register")
    assert result.returncode == 2
    assert "DATABUS_SCHEMA_REGISTRY__URL" in result.stderr  # errors go to stderr
    assert result.stdout == ""
