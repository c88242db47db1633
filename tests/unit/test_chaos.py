"""The fault suite's bookkeeping: what counts as stored, dead-lettered, lost; and the hostile generator."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

from finpulse.chaos.accounting import StoreSnapshot, combined, commits_past_unprocessed, first_unprocessed, tally
from finpulse.chaos.hostile import CATEGORIES, TEN_MB, hostile_inputs, mix
from finpulse.chaos.result import ChaosResult
from finpulse.chaos.traffic import Accepted, Message, end_offsets
from finpulse.identity import EventKey

AT = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


def accepted(offset: int, identity: EventKey | None, category: str = "valid", partition: int = 0) -> Accepted:
    message = Message("social.raw", b"{}", None, identity, category)
    return Accepted(message, "p.social.raw", partition, offset)


def key(n: int) -> EventKey:
    return EventKey("social", "x", f"e{n}")


def test_each_accepted_message_is_stored_dead_lettered_or_lost() -> None:
    sent = [accepted(0, key(0)), accepted(1, key(1)), accepted(2, None, "bad_json"), accepted(3, None, "bad_json"),
            accepted(4, key(4)), accepted(5, key(0), "duplicate")]  # fmt: skip
    store = StoreSnapshot(
        stored=Counter({key(0): 1, key(1): 1}),
        dlq_positions=frozenset({("p.social.raw", 0, 2), ("p.social.raw", 0, 4)}),
        scored_rows=3,
        scored_distinct=2,
        dlq_rows=2,
        dlq_distinct=2,
    )
    result = tally(sent, store)
    assert (result.sent, result.stored, result.dlq, result.lost) == (6, 3, 2, 1)
    assert result.lost_positions == [("p.social.raw", 0, 3)]
    assert result.valid_in_dlq == 1  # e4 is a feed event: the DLQ is no place for it
    assert result.duplicated == 1


def test_two_stores_count_as_one_server_would_hold_them() -> None:
    first = StoreSnapshot(stored=Counter({key(0): 1, key(1): 1}), scored_rows=2, scored_distinct=2)
    second = StoreSnapshot(stored=Counter({key(1): 1, key(2): 2}), scored_rows=3, scored_distinct=2)
    both = combined(first, second)
    assert both.in_both_stores == 1  # redelivered after a rebalance: a shared server's writer drops it
    assert both.duplicated == 1  # key(2) written twice within one store is a duplicate wherever it lives
    assert tally([accepted(i, key(i)) for i in range(3)], both).lost == 0


def test_a_commit_past_the_first_unprocessed_offset_is_reported() -> None:
    sent = [accepted(i, key(i)) for i in range(5)] + [accepted(0, key(9), partition=1)]
    store = StoreSnapshot(stored=Counter({key(0): 1, key(1): 1, key(3): 1, key(9): 1}))
    first_missing = first_unprocessed(sent, store)
    assert first_missing == {("p.social.raw", 0): 2, ("p.social.raw", 1): 1}
    committed = {("p.social.raw", 0): 3, ("p.social.raw", 1): 1, ("p.news.raw", 0): None}
    assert commits_past_unprocessed(committed, first_missing) == {("p.social.raw", 0): (3, 2)}
    assert end_offsets(sent) == {("p.social.raw", 0): 5, ("p.social.raw", 1): 1}


def test_a_result_is_ok_only_without_loss_duplicates_or_failed_checks() -> None:
    assert ChaosResult("s", 1, 1, 0, 0, 0, None).ok
    assert not ChaosResult("s", 1, 0, 0, 0, 1, None).ok
    failed = ChaosResult("s", 1, 1, 0, 0, 0, None, checks={"a": True, "b": False})
    assert not failed.ok and failed.failed_checks == ["b"]


def test_hostile_inputs_are_repeatable_and_cover_every_category() -> None:
    first = hostile_inputs(300, seed=7, run_id="t", created_at=AT)
    assert first == hostile_inputs(300, seed=7, run_id="t", created_at=AT)
    assert first != hostile_inputs(300, seed=8, run_id="t", created_at=AT)
    assert {m.category for m in first} == set(CATEGORIES)
    assert {m.category for m in hostile_inputs(len(CATEGORIES), seed=1, run_id="t")} == set(CATEGORIES)
    assert any(len(m.value) > TEN_MB for m in first if m.category == "ten_mb")
    assert all(m.identity is None for m in first if m.category in ("bad_json", "bad_utf8", "ten_mb"))
    assert all(m.identity is not None for m in first if m.category in ("control_chars", "unknown_fields"))


def test_hostile_events_carry_the_date_they_are_given() -> None:
    inputs = hostile_inputs(100, seed=5, run_id="t", created_at=AT)
    stored_kind = [m for m in inputs if m.category in ("control_chars", "unknown_fields")]
    assert stored_kind and all(json.loads(m.value)["created_at"] == "2026-12-01T09:30:00Z" for m in stored_kind)


def test_a_duplicate_repeats_an_earlier_input_byte_for_byte() -> None:
    inputs = hostile_inputs(200, seed=3, run_id="t")
    for index, message in enumerate(inputs):
        if message.category == "duplicate":
            assert any(m.value == message.value and m.key == message.key for m in inputs[:index])


def test_mixing_keeps_the_valid_order_and_every_hostile_input() -> None:
    valid = [Message("social.raw", str(i).encode(), None, key(i)) for i in range(50)]
    hostile = hostile_inputs(20, seed=2, run_id="t")
    mixed = mix(valid, hostile, seed=2)
    assert [m for m in mixed if m.category == "valid"] == valid
    assert len(mixed) == 70 and mix(valid, hostile, seed=2) == mixed
