"""Choosing what ``databus dlq replay`` sends: filters, letters already replayed,
letters kept without their bytes, and broken ones (no broker: the pure part)."""

from __future__ import annotations

from databus.dlq_inspect import parse_dead_letter
from databus.dlq_replay import Letter, choose_letters, plan_replay, without_bytes
from schemas.dead_letters import ORIGINAL_SHA256_HEADER, DeadLetter, dlq_headers

DS = "publicservice.dossiers"
DLQ = "publicservice.dossiers.dlq.v1"


def letter(offset: int, reason: str = "invalid_citizen_id", *, bytesless: bool = False) -> Letter:
    dead = DeadLetter(
        stage="standardize" if reason == "invalid_citizen_id" else "decode",
        reason=reason,
        exception_class="bus.errors.ValidationError",
        message="refused",
    )
    original = [("ce_id", f"event-{offset}".encode())]
    headers: list[tuple[str, bytes | None]] = list(
        dlq_headers(original, topic=f"{DS}.raw.v1", partition=0, offset=offset, letter=dead)
    )
    if bytesless:
        headers.append((ORIGINAL_SHA256_HEADER, b"00" * 32))
    view = parse_dead_letter(DS, topic=DLQ, partition=0, offset=offset, headers=headers)
    return Letter(view, b"key", None if bytesless else b"value", headers)


LETTERS = [letter(0), letter(1), letter(2, "truncated_payload"), letter(3, bytesless=True)]


def test_choose_letters_applies_the_filters_and_names_missing_offsets() -> None:
    chosen, missing = choose_letters(LETTERS, offsets=[1, 9])
    assert [lt.view.dlq_offset for lt in chosen] == [1]
    assert missing == {9}
    chosen, missing = choose_letters(LETTERS, reason="truncated_payload")
    assert [lt.view.dlq_offset for lt in chosen] == [2] and not missing
    assert len(choose_letters(LETTERS)[0]) == len(LETTERS)


def test_plan_skips_replayed_letters_and_those_without_bytes() -> None:
    first = LETTERS[0].view
    plan = plan_replay(LETTERS, {(first.letter_id, first.event_id)})
    assert plan.skipped == {first.letter_id}
    assert [lt.view.dlq_offset for lt in plan.bytesless] == [3]
    assert without_bytes(LETTERS[3]) and not without_bytes(LETTERS[0])
    assert [lt.view.dlq_offset for lt in plan.todo] == [1, 2]
    assert plan.broken == 1  # offset 2's reason is a decode reason: it will come back


def test_plan_with_nothing_replayed_sends_every_letter_with_bytes() -> None:
    plan = plan_replay(LETTERS, set())
    assert not plan.skipped
    assert [lt.view.dlq_offset for lt in plan.todo] == [0, 1, 2]
