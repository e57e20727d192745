"""The chaos checker on hand-made cases: each count moves for its own fault and only it."""

from __future__ import annotations

from chaos_check import (
    Letter,
    Published,
    Stored,
    check_dlq,
    check_events,
    check_sink,
    contribution_drift,
    expected_state,
)

A, B = "health.facilities", "education.schools"

PUBLISHED = [
    Published("e1", A, "F1", 1),
    Published("e2", A, "F1", 2),
    Published("e3", A, "F2", 1),
    Published("e4", A, "F3", 1, expect_reason="invalid_commune"),  # only invalid: no entity
    Published("e5", A, "F2", 2, expect_reason="invalid_phone"),  # newer but invalid
    Published("e6", B, "S1", 1),
]


def dlq_topic(dataset: str) -> str:
    return f"{dataset}.dlq.v1"


def test_expected_state_is_the_newest_valid_version_per_entity() -> None:
    assert expected_state(PUBLISHED) == {
        (A, "F1"): (2, "e2"),
        (A, "F2"): (1, "e3"),
        (B, "S1"): (1, "e6"),
    }
    assert expected_state(PUBLISHED, [B]) == {(B, "S1"): (1, "e6")}
    # a replay of an event changes nothing
    assert expected_state([*PUBLISHED, PUBLISHED[0]]) == expected_state(PUBLISHED)


def test_an_exact_sink_counts_nothing() -> None:
    stored = [Stored(A, "F1", 2, "e2"), Stored(A, "F2", 1, "e3"), Stored(B, "S1", 1, "e6")]
    check = check_sink("ioc", PUBLISHED, stored)
    assert check.ok and check.expected == 3
    assert (check.lost, check.duplicated, check.regressed, check.unexpected) == (0, 0, 0, 0)


def test_each_fault_moves_its_own_count() -> None:
    stored = [
        Stored(A, "F1", 1, "e1"),  # regressed: the newest valid is version 2
        Stored(A, "F2", 2, "e5"),  # unexpected: the invalid version 2 got through
        Stored(A, "F3", 1, "e4"),  # unexpected: an entity only invalid events made
        Stored(A, "F1", 2, "e2"),  # a second copy of F1 (duplicated), newest: not regressed
    ]
    check = check_sink("health", PUBLISHED, stored, datasets=[A])
    assert check.expected == 2
    assert check.lost == 0
    assert check.duplicated == 1
    assert check.regressed == 0  # the best copy of F1 is current
    assert check.unexpected == 2
    assert check.examples["duplicated"] == [str((A, "F1"))]

    lost = check_sink("sql", PUBLISHED, [Stored(A, "F1", 1, "e1")], datasets=[A])
    assert (lost.lost, lost.regressed, lost.duplicated) == (1, 1, 0)
    assert not lost.ok


def test_a_copy_without_a_version_is_older_than_any_event_and_never_unexpected() -> None:
    stubs = [Stored(A, "F1", None), Stored(A, "F2", 1, "e3"), Stored(A, "F9", None)]
    check = check_sink("health", PUBLISHED, stubs, datasets=[A])
    assert (check.lost, check.regressed, check.unexpected) == (0, 1, 0)


def test_other_datasets_copies_are_ignored() -> None:
    check = check_sink("health", PUBLISHED, [Stored(B, "S9", 4, "x")], datasets=[A])
    assert (check.lost, check.unexpected) == (2, 0)


def test_event_rows_count_lost_duplicated_and_unexpected_events() -> None:
    check = check_events("sql_history", PUBLISHED, {"e1": 1, "e2": 2, "e3": 1, "e4": 1})
    assert check.expected == 4  # e1 e2 e3 e6
    assert (check.lost, check.duplicated, check.unexpected) == (1, 1, 1)
    assert check.examples["lost"] == ["e6"]
    assert check_events("x", PUBLISHED, {"e1": 1, "e2": 1, "e3": 1, "e6": 1}).ok


def test_the_dlq_must_hold_every_invalid_event_once_with_its_reason() -> None:
    exact = [
        Letter(dlq_topic(A), "e4", "invalid_commune"),
        Letter(dlq_topic(A), "e5", "invalid_phone"),
    ]
    assert check_dlq(PUBLISHED, exact, dlq_topic).ok
    repeated = check_dlq(PUBLISHED, [*exact, exact[0]], dlq_topic)
    assert repeated.duplicated == 1 and repeated.ok  # at-least-once: counted, not failed

    wrong = [
        Letter(dlq_topic(A), "e4", "invalid_phone"),  # wrong reason
        Letter(dlq_topic(B), "e4", "invalid_commune"),  # second letter for e4
        Letter(dlq_topic(A), "e1", "invalid_phone"),  # a valid event dead-lettered
    ]
    check = check_dlq(
        PUBLISHED, wrong, dlq_topic, sink_letters=[Letter("sink.x.dlq.v1", "e2", "http_4xx")]
    )
    assert check.expected == 2
    assert (check.missing, check.unexpected, check.wrong_reason) == (1, 1, 1)
    assert (check.duplicated, check.wrong_topic, check.sink_letters) == (1, 0, 1)
    assert check.examples["missing"] == ["e5"]
    assert not check.ok

    assert (
        check_dlq(PUBLISHED, [Letter(dlq_topic(B), "e4", "invalid_commune")], dlq_topic).wrong_topic
        == 1
    )


def test_contribution_drift_compares_counters_with_the_entities_contributions() -> None:
    contributions = {
        "sum:00": ["h\tschools|X\t1\nz\t3\tm\t5", "h\tschools|X\t1\nh\tstudents|X\t30"],
        "sum:01": [""],
    }
    exact = {"sum:00": {"schools|X": 2, "students|X": 30}}
    assert contribution_drift(contributions, exact) == 0
    doubled = {"sum:00": {"schools|X": 3, "students|X": 30}, "sum:01": {"other": 1}}
    assert contribution_drift(contributions, doubled) == 2
    assert contribution_drift(contributions, {}) == 2  # a store that lost its sums
