"""The embedded broker's retention plan (``plan_trim``): which stored batches go."""

from __future__ import annotations

from databus.standins.object_store import BatchFile, TopicPolicy, plan_trim

NOW = 1_000_000_000
HOUR = 3_600_000


def _batches(topic: str, n: int, *, size: int = 100, age_step_ms: int = HOUR) -> list[BatchFile]:
    """``n`` batches of 10 records each, the first the oldest (ages n-1 … 0 steps)."""
    return [
        BatchFile(
            topic, 0, 10 * i, 10 * i + 9, NOW - (n - 1 - i) * age_step_ms, size, f"{topic}/{i}"
        )
        for i in range(n)
    ]


def test_time_retention_deletes_batches_older_than_the_topic_keeps() -> None:
    batches = {("dlq", 0): _batches("dlq", 5)}
    policies = {"dlq": TopicPolicy(retention_ms=2 * HOUR + 1)}
    doomed, over = plan_trim(batches, policies, {}, NOW, budget_bytes=10**9)
    # ages 4h, 3h go; 2h (within 2h+1ms), 1h and the newest stay
    assert [b.offset for b in doomed] == [0, 10]
    assert over is False


def test_the_newest_batch_of_a_partition_is_never_deleted() -> None:
    batches = {("dlq", 0): _batches("dlq", 3)}
    doomed, _ = plan_trim(batches, {"dlq": TopicPolicy(retention_ms=0)}, {}, NOW + HOUR, 10**9)
    assert [b.offset for b in doomed] == [0, 10]


def test_budget_takes_oldest_first_and_only_what_every_group_committed_past() -> None:
    batches = {("raw", 0): _batches("raw", 10), ("std", 0): _batches("std", 10, age_step_ms=1)}
    policies = {"raw": TopicPolicy(), "std": TopicPolicy()}
    # raw: the slowest group is at offset 45 (batches 0-3 delivered); std: at 95
    committed = {("raw", 0): 45, ("std", 0): 95}
    doomed, over = plan_trim(batches, policies, committed, NOW, budget_bytes=1000)
    # 2000 bytes held, target 900: 11 batches must go; raw's 4 delivered ones are the
    # oldest, then std's oldest; nothing at or past a group's offset, never a newest
    assert [(b.topic, b.offset) for b in doomed][:4] == [
        ("raw", 0),
        ("raw", 10),
        ("raw", 20),
        ("raw", 30),
    ]
    assert all(b.last_offset < committed[(b.topic, 0)] for b in doomed)
    assert len(doomed) == 11
    assert over is False


def test_budget_never_takes_what_is_not_delivered_and_says_it_is_over() -> None:
    batches = {("raw", 0): _batches("raw", 10)}
    doomed, over = plan_trim(batches, {"raw": TopicPolicy()}, {("raw", 0): 25}, NOW, 100)
    assert [b.offset for b in doomed] == [0, 10]
    assert over is True
    # no group commits on it at all: nothing is known to be delivered, nothing goes
    doomed, over = plan_trim(batches, {"raw": TopicPolicy()}, {}, NOW, 100)
    assert doomed == [] and over is True


def test_under_budget_nothing_goes_from_topics_without_a_time_limit() -> None:
    batches = {("raw", 0): _batches("raw", 10)}
    doomed, over = plan_trim(batches, {}, {("raw", 0): 10**6}, NOW, budget_bytes=10**6)
    assert doomed == [] and over is False


def test_compacted_topics_lose_only_what_a_committing_group_covers() -> None:
    """Entity changelogs and ``_schemas`` are replayed from the start: no age or budget
    trims them; a group committing on them (a snapshot's coverage) is the only floor."""
    batches = {("changelog", 0): _batches("changelog", 5)}
    compact = {"changelog": TopicPolicy(retention_ms=0, compact=True)}
    assert plan_trim(batches, compact, {}, NOW + 10 * HOUR, 1) == ([], False)
    doomed, _ = plan_trim(batches, compact, {("changelog", 0): 30}, NOW, 1)
    assert [b.offset for b in doomed] == [0, 10, 20]  # offsets 0-29: the group is at 30


def test_topic_policy_reads_the_broker_configs() -> None:
    assert TopicPolicy.from_configs({"retention.ms": "604800000"}) == TopicPolicy(604800000)
    assert TopicPolicy.from_configs({"cleanup.policy": "compact", "retention.ms": "-1"}).compact
    assert TopicPolicy.from_configs({}) == TopicPolicy(-1, False)
    assert TopicPolicy.from_configs({"retention.ms": "soon"}).retention_ms == -1
