"""The audit log's hash chain: it verifies, and any changed character is found."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.audit import GENESIS, AuditLog, verify


def _log(path: Path, n: int = 5) -> list[str]:
    log = AuditLog(path)
    for i in range(n):
        log.append(
            actor=f"agency-{i % 2}",
            action="api.read",
            object="feedback.reports",
            outcome="granted" if i % 3 else "denied",
            detail={"records": i, "note": "Sở Xây dựng"},
            at=datetime(2025, 10, 1, 8, i, tzinfo=UTC),
        )
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_a_written_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _log(path)
    result = verify(path)
    assert result.ok and result.lines == len(lines) == 5
    assert result.head != GENESIS


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    assert verify(path).ok


def test_entries_chain_to_the_previous_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    first = log.append(actor="x", action="a", object="o", outcome="granted")
    second = log.append(actor="x", action="a", object="o", outcome="granted")
    assert first["prev"] == GENESIS and first["seq"] == 1
    assert second["prev"] == first["hash"] and second["seq"] == 2


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_changing_one_character_of_any_line_is_found_at_that_line(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    lines = _log(path)
    number = data.draw(st.integers(0, len(lines) - 1), label="line")
    line = lines[number]
    position = data.draw(st.integers(0, len(line) - 2), label="position")  # not the newline
    replacement = data.draw(
        st.characters(codec="utf-8", exclude_categories=["Cs"]).filter(
            lambda c: c != line[position]
        ),
        label="replacement",
    )
    lines[number] = line[:position] + replacement + line[position + 1 :]
    path.write_text("".join(lines), encoding="utf-8")
    result = verify(path)
    assert not result.ok
    assert result.broken_line == number + 1


def test_removing_or_swapping_lines_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _log(path)
    path.write_text("".join(lines[:2] + lines[3:]), encoding="utf-8")
    assert verify(path).broken_line == 3
    path.write_text("".join([lines[1], lines[0], *lines[2:]]), encoding="utf-8")
    assert verify(path).broken_line == 1


def test_a_torn_last_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _log(path, 3)
    path.write_text("".join(lines) + lines[0][:20], encoding="utf-8")
    result = verify(path)
    assert result.broken_line == 4 and result.reason == "incomplete last line"


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")

    def write(worker: int) -> None:
        for i in range(25):
            log.append(actor=f"w{worker}", action="share.publish", object="t", outcome=str(i))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = verify(log.path)
    assert result.ok and result.lines == 100


def test_databus_audit_verify_exits_1_naming_the_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from databus.agency_cli import agency_app

    path = tmp_path / "audit.jsonl"
    lines = _log(path)
    ok = CliRunner().invoke(agency_app, ["audit", "verify", str(path)])
    assert ok.exit_code == 0 and "5 line(s) verify" in ok.output
    lines[2] = lines[2].replace("granted", "grantee", 1).replace("denied", "denyed", 1)
    path.write_text("".join(lines), encoding="utf-8")
    broken = CliRunner().invoke(agency_app, ["audit", "verify", str(path)])
    assert broken.exit_code == 1 and "line 3" in broken.output


def test_grants_are_audited_tokens_and_acls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from databus.agency_cli import agency_app
    from schemas.access_policy import load_policy

    monkeypatch.setenv("DATABUS_DATA_DIR", str(tmp_path))
    agency = sorted(load_policy(None).agencies)[0]
    issued = CliRunner().invoke(agency_app, ["agency-token", agency])
    assert issued.exit_code == 0, issued.output
    unknown = CliRunner().invoke(agency_app, ["agency-token", "no-such-agency"])
    assert unknown.exit_code == 2 and "no agency" in unknown.output
    rendered = CliRunner().invoke(agency_app, ["acl", "render", "--out", str(tmp_path / "a.sh")])
    assert rendered.exit_code == 0, rendered.output

    log = tmp_path / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["action"], e["object"]) for e in entries] == [
        ("grant.token_issued", agency),
        ("grant.acl_render", str(tmp_path / "a.sh")),
    ]
    token_line = issued.output
    # the token itself is never on the log, only the head of its digest
    assert entries[0]["detail"]["token_sha256_head"] in token_line
    assert agency in entries[1]["detail"]["agencies"]
    assert verify(log).ok


def _rotating(path: Path, entries: int, max_bytes: int = 2048, keep: int = 3) -> AuditLog:
    log = AuditLog(path, max_bytes=max_bytes, keep=keep)
    for i in range(entries):
        log.append(
            actor="agency-a", action="api.read", object="t", outcome="granted", detail={"i": i}
        )
    return log


def test_a_rotating_log_stays_bounded_and_one_chain(tmp_path: Path) -> None:
    from bus.audit import ROTATED, rotated_files, verify_rotated

    path = tmp_path / "audit.jsonl"
    _rotating(path, 300)
    kept = rotated_files(path, 10)
    assert [p.name for p in kept] == ["audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1"]
    line_max = max(len(line) for p in [*kept, path] for line in p.read_bytes().splitlines())
    for p in [*kept, path]:
        assert p.stat().st_size < 2048 + 2 * (line_max + 1)
    results = verify_rotated(path)
    assert [r.ok for _, r in results] == [True] * 4
    # each newer file starts with the rotation entry carrying on its predecessor's head
    for (_, older), (newer, _) in itertools.pairwise(results):
        first = json.loads(newer.read_text().splitlines()[0])
        assert first["action"] == ROTATED and first["prev"] == older.head
    # the oldest kept file continues a chain whose start aged out: it says so
    assert results[0][1].starts_after != GENESIS
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["detail"] == {"i": 299} and results[-1][1].head == last["hash"]


def test_a_changed_or_missing_rotated_file_is_found(tmp_path: Path) -> None:
    from bus.audit import verify_rotated

    path = tmp_path / "audit.jsonl"
    _rotating(path, 300)
    middle = path.with_name("audit.jsonl.2")
    lines = middle.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"i":', '"j":', 1)
    middle.write_text("".join(lines))
    results = verify_rotated(path)
    assert results[-1][0] == middle and results[-1][1].broken_line == 4

    _rotating(tmp_path / "b.jsonl", 300)
    path.with_name("b.jsonl.2").unlink()  # a file taken out of the middle
    results = verify_rotated(tmp_path / "b.jsonl")
    assert results[-1][0].name == "b.jsonl.1" and results[-1][1].broken_line == 1
    assert "prev does not match" in (results[-1][1].reason or "")


def test_concurrent_writers_rotating_keep_one_chain(tmp_path: Path) -> None:
    from bus.audit import verify_rotated

    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, keep=50)

    def write(worker: int) -> None:
        for i in range(50):
            log.append(actor=f"w{worker}", action="share.publish", object="t", outcome=str(i))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = verify_rotated(log.path, keep=50)
    assert len(results) > 2 and all(r.ok for _, r in results)
    entries = [
        json.loads(line)
        for p, _ in results
        for line in p.read_text().splitlines()
        if '"share.publish"' in line
    ]
    assert len(entries) == 200
    assert sorted(e["seq"] for e in entries) == [e["seq"] for e in entries]


def test_databus_audit_verify_checks_the_rotated_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from databus.agency_cli import agency_app

    path = tmp_path / "audit.jsonl"
    _rotating(path, 100)
    ok = CliRunner().invoke(agency_app, ["audit", "verify", str(path)])
    assert ok.exit_code == 0 and "in 4 files verify" in ok.output, ok.output
    rotated = path.with_name("audit.jsonl.1")
    rotated.write_text(rotated.read_text().replace("granted", "grantee", 1))
    broken = CliRunner().invoke(agency_app, ["audit", "verify", str(path)])
    assert broken.exit_code == 1 and "audit.jsonl.1 broken" in broken.output, broken.output


def test_an_issued_token_carries_its_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from typer.testing import CliRunner

    from databus.agency_cli import agency_app
    from schemas.access_policy import load_policy

    monkeypatch.setenv("DATABUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABUS_ACCESS__TOKEN_TTL_DAYS", "30")
    agency = sorted(load_policy(None).agencies)[0]
    for args in ([], ["--days", "7"]):
        issued = CliRunner().invoke(agency_app, ["agency-token", agency, *args])
        assert issued.exit_code == 0, issued.output
        assert "token_expires = " in issued.output
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    for entry, days in zip(entries, (30, 7), strict=True):
        expires = datetime.fromisoformat(entry["detail"]["expires"])
        left = expires - datetime.now(UTC)
        assert timedelta(days=days) - timedelta(minutes=5) < left <= timedelta(days=days)
