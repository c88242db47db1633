"""The commit rule of streams/recovery.py: never commit past an offset that was not processed."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.types import TP

from finpulse.streams import recovery

TP0 = TP("t.news.raw", 0)


def consumer_with(committed: int | None, acked: list[int]) -> SimpleNamespace:
    """The bookkeeping ``Consumer._new_offset`` reads, as Faust's consumer keeps it."""
    consumer = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _committed_offset=defaultdict(lambda: None),
        _gap=defaultdict(list),
    )
    consumer._committed_offset[TP0] = committed
    ack(consumer, acked)
    return consumer


def ack(consumer: SimpleNamespace, offsets: list[int]) -> None:
    consumer._acked[TP0].extend(offsets)
    consumer._acked_index[TP0].update(offsets)


@pytest.fixture(autouse=True)
def fresh_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "COMMIT_HOLDS", recovery.CommitHolds())


def test_a_missing_head_holds_the_commit_until_it_is_acked() -> None:
    consumer = consumer_with(committed=100, acked=list(range(101, 108)))
    assert recovery._new_offset(consumer, TP0) is None
    assert recovery.COMMIT_HOLDS.as_dict()["commit_holds_open"] == 1
    ack(consumer, [100])
    assert recovery._new_offset(consumer, TP0) == 108
    assert recovery.COMMIT_HOLDS.as_dict()["commit_holds_open"] == 0


def test_a_committed_offset_of_zero_is_checked_like_any_other() -> None:
    consumer = consumer_with(committed=0, acked=[1, 2, 3])
    assert recovery._new_offset(consumer, TP0) is None
    ack(consumer, [0])
    assert recovery._new_offset(consumer, TP0) == 4


def test_only_the_run_from_the_committed_offset_is_committed() -> None:
    consumer = consumer_with(committed=100, acked=[100, 101, 105, 106])
    assert recovery._new_offset(consumer, TP0) == 102
    consumer._committed_offset[TP0] = 102
    assert recovery._new_offset(consumer, TP0) is None  # 102..104 were never processed
    ack(consumer, [102, 103, 104])
    assert recovery._new_offset(consumer, TP0) == 107


def test_a_gap_seen_by_the_fetcher_is_not_committed_past() -> None:
    consumer = consumer_with(committed=10, acked=[10, 11, 15])
    consumer._gap[TP0] = ["the drain loop's interval tree of skipped offsets 12..14"]
    assert recovery._new_offset(consumer, TP0) == 12
    assert TP0 not in consumer._gap


def test_nothing_acked_commits_nothing() -> None:
    assert recovery._new_offset(consumer_with(committed=5, acked=[]), TP0) is None
