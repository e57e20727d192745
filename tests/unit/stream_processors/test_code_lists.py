"""National code lists: lookups, aliases and the checks on the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ConfigError
from schemas.domain.code_lists import default_code_lists, load_code_lists

HEADER = "source_code,code,name,category\n"


def test_packaged_lists_load() -> None:
    lists = default_code_lists()
    for name in (
        "icd10",
        "notifiable_diseases",
        "land_use",
        "subjects",
        "document_types",
        "dossier_steps",
        "bhyt_groups",
    ):
        assert lists[name].entries, name


def test_lookup_ignores_case_spaces_and_composition() -> None:
    types = default_code_lists()["document_types"]
    match = types.lookup("  CÔNG   VĂN ")
    assert match is not None and match.entry.code == "CV" and match.mapped
    nfd = "Co\u0302ng va\u0306n"
    assert types.lookup(nfd) is not None
    exact = types.lookup("CV")
    assert exact is not None and not exact.mapped
    assert types.lookup("Sắc lệnh") is None


def test_notifiable_diseases_carry_their_group() -> None:
    match = default_code_lists()["notifiable_diseases"].lookup("A90")
    assert match is not None and match.entry.category == "B"


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "codes_x.csv").write_text(HEADER + body, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("A,A,Alpha,\nA,A,Again,\n", "duplicated"),
        ("B,A,,\n", "has no row declaring it"),
        ("A,A,,\n", "'name' is empty"),
        ("A,A\n", "expected 4 fields"),
    ],
)
def test_a_bad_row_names_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_code_lists(write(tmp_path, body))


def test_a_bad_header(tmp_path: Path) -> None:
    (tmp_path / "codes_x.csv").write_text("code,name\nA,B\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="header"):
        load_code_lists(tmp_path)
