"""The writer on a real chDB: every event stored once, whatever is redelivered, retried or raced."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver import Client

from finpulse.sinks.exceptions import ClickHouseUnavailableError, ClickHouseWriteError
from finpulse.sinks.writer import ClickHouseWriter
from tests.integration.sinks.support import (
    FlakyClient,
    count_and_unique,
    ids,
    scored_columns,
    write,
    write_scored,
)

pytestmark = pytest.mark.integration

FAST_RETRIES = {"retry_initial_s": 0.02, "retry_cap_s": 0.1}


def writer_for(client: object, retry_max_s: float = 5.0) -> ClickHouseWriter:
    return ClickHouseWriter(client, retry_max_s=retry_max_s, **FAST_RETRIES)  # type: ignore[arg-type]


def test_a_batch_is_written(client: Client) -> None:
    result = write_scored(writer_for(client), ids("new", 0, 500), "t:0:0-499")
    assert (result.inserted, result.skipped_existing, result.attempts) == (500, 0, 1)
    assert count_and_unique(client, prefix="new-") == (500, 500)
    row = client.query(
        "SELECT primary_ticker, tickers, kind, partition, offset FROM scored_events "
        "WHERE event_id = 'new-000001'"
    ).result_rows[0]
    assert row == ("AAPL", ["AAPL", "MSFT"], "news", 1, 1)


def test_rows_as_dicts_are_written_too(client: Client) -> None:
    columns = scored_columns(ids("dicts", 0, 3))
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    assert write(writer_for(client), "scored_events", rows, "dicts").inserted == 3
    assert count_and_unique(client, prefix="dicts-") == (3, 3)


def test_the_same_batch_again_adds_nothing_whatever_its_token(client: Client) -> None:
    writer = writer_for(client)
    batch = scored_columns(ids("again", 0, 300))
    assert write(writer, "scored_events", batch, "t:0:0-299").inserted == 300

    same_token = write(writer, "scored_events", batch, "t:0:0-299")
    other_token = write(writer, "scored_events", batch, "after-a-restart")
    assert (same_token.inserted, same_token.skipped_existing) == (0, 300)
    assert (other_token.inserted, other_token.skipped_existing) == (0, 300)
    assert count_and_unique(client, prefix="again-") == (300, 300)


def test_redelivery_with_other_batch_boundaries_adds_only_new_events(client: Client) -> None:
    writer = writer_for(client)
    write_scored(writer, ids("overlap", 0, 200), "p0:0-199")
    # After a rebalance the new owner reads from the last commit, cut into other batches.
    second = write_scored(writer, ids("overlap", 150, 350), "p0:150-349")
    third = write_scored(writer, ids("overlap", 100, 400), "p0:100-399")
    assert (second.inserted, second.skipped_existing) == (150, 50)
    assert (third.inserted, third.skipped_existing) == (50, 250)
    assert (second.duplicates, third.duplicates) == (50, 250)
    assert second.existing == frozenset(ids("overlap", 150, 200))  # what the index stage flags as replayed
    assert third.existing == frozenset(ids("overlap", 100, 350))
    assert count_and_unique(client, prefix="overlap-") == (400, 400)


def test_duplicates_inside_a_batch_are_stored_once(client: Client) -> None:
    keys = ids("twice", 0, 10)
    result = write(writer_for(client), "scored_events", scored_columns(keys + keys[:4]), "dup")
    assert (result.inserted, result.skipped_in_batch, result.duplicates) == (10, 4, 4)
    assert count_and_unique(client, prefix="twice-") == (10, 10)


def test_an_empty_batch_touches_nothing(client: Client) -> None:
    writer = writer_for(client)
    assert write(writer, "no_such_table", {}, "empty").inserted == 0
    assert write(writer, "no_such_table", {"event_id": []}, "empty").inserted == 0


def test_a_batch_without_its_key_column_is_refused(client: Client) -> None:
    with pytest.raises(ValueError, match="no key column 'event_id'"):
        write(writer_for(client), "scored_events", {"text": ["x"]}, "nokey")


def test_clickhouse_deduplicates_a_repeated_token_by_itself(client: Client) -> None:
    """The second line of defence, without the writer's key check: the table keeps a dedup window."""
    batch = scored_columns(ids("token", 0, 50))
    settings = {"insert_deduplicate": 1, "insert_deduplication_token": "token-batch-1"}
    for _ in range(2):
        client.insert(
            "scored_events",
            list(batch.values()),
            column_names=list(batch),
            column_oriented=True,
            settings=settings,
        )
    assert count_and_unique(client, prefix="token-") == (50, 50)


def test_inserts_failing_for_a_while_land_once_after_retries(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyClient(client, fail_inserts=3)
    with caplog.at_level(logging.WARNING, logger="finpulse.sinks.writer"):
        result = write_scored(writer_for(flaky), ids("outage", 0, 400), "o")
    assert flaky.inserts_failed == 3
    assert (result.inserted, result.attempts) == (400, 4)
    assert count_and_unique(client, prefix="outage-") == (400, 400)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 3 and "Connection refused (injected outage)" in retries[0].getMessage()


def test_an_outage_of_some_time_is_waited_out(client: Client) -> None:
    flaky = FlakyClient(client, fail_until=time.monotonic() + 1.0)
    result = write_scored(writer_for(flaky, retry_max_s=10), ids("timed", 0, 100), "t")
    assert result.inserted == 100 and flaky.inserts_failed >= 2
    assert count_and_unique(client, prefix="timed-") == (100, 100)


def test_an_insert_that_landed_before_its_error_is_not_written_twice(client: Client) -> None:
    flaky = FlakyClient(client, fail_inserts=1, land_then_fail=True)
    result = write_scored(writer_for(flaky), ids("landed", 0, 250), "l")
    assert flaky.inserts_failed == 1 and result.attempts == 2
    assert result.inserted == 250  # stored by this call, though its first attempt was reported failed
    assert result.duplicates == 0  # its own landed rows are no duplicates
    assert count_and_unique(client, prefix="landed-") == (250, 250)


def test_a_failing_existence_check_is_retried_too(client: Client) -> None:
    flaky = FlakyClient(client, fail_queries=2)
    result = write_scored(writer_for(flaky), ids("check", 0, 20), "c")
    assert (flaky.queries_failed, result.attempts, result.inserted) == (2, 3, 20)
    assert count_and_unique(client, prefix="check-") == (20, 20)


def test_after_the_retry_budget_a_clear_error_and_nothing_written(client: Client) -> None:
    # The outage outlasts the budget many times over: a writer that kept retrying would store the batch
    # once it ends and raise nothing. The first attempt (one SELECT on chDB) takes milliseconds, so the
    # 2 s budget always leaves room for retries.
    flaky = FlakyClient(client, fail_until=time.monotonic() + 60)
    with pytest.raises(ClickHouseUnavailableError, match="ClickHouse kept failing") as failed:
        write_scored(writer_for(flaky, retry_max_s=2.0), ids("down", 0, 10), "d")
    assert "Connection refused (injected outage)" in str(failed.value)
    assert f"over {flaky.inserts_failed} attempts" in str(failed.value)
    assert flaky.inserts_failed >= 2
    assert count_and_unique(client, prefix="down-") == (0, 0)


def test_an_error_no_retry_can_fix_is_raised_at_once(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    batch = {**scored_columns(ids("wrong", 0, 5)), "no_such_column": [1] * 5}
    with (
        caplog.at_level(logging.WARNING, logger="finpulse.sinks.writer"),
        pytest.raises(ClickHouseWriteError, match="retrying would not help") as failed,
    ):
        write(ClickHouseWriter(client, retry_max_s=30), "scored_events", batch, "w")
    assert not [r for r in caplog.records if "retrying in" in r.getMessage()]  # the first attempt was the last
    assert not isinstance(failed.value, ClickHouseUnavailableError)
    assert count_and_unique(client, prefix="wrong-") == (0, 0)


def test_concurrent_overlapping_writes_from_threads_store_each_event_once(client: Client) -> None:
    writer = writer_for(client)
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for offset in range(start, start + 600, 150):
                write_scored(writer, ids("threads", offset, offset + 300), f"{offset}")
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(start,)) for start in (0, 100, 200, 300)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert count_and_unique(client, prefix="threads-") == (1050, 1050)


def test_dlq_and_retrain_rows_are_idempotent_by_their_keys(client: Client) -> None:
    now = datetime.now(UTC)
    dlq = {
        "dlq_id": [f"finpulse.news.raw:0:{o}" for o in (7, 8, 8)],
        "reason": ["invalid_json", "missing_field", "missing_field"],
        "error": ["Expecting value: line 1 column 1"] + ["headline: Field required"] * 2,
        "source_topic": ["finpulse.news.raw"] * 3,
        "partition": [0] * 3,
        "offset": [7, 8, 8],
        "payload_sha256": ["0" * 64] * 3,
        "payload_head": ["{not json", '{"id": "x"}', '{"id": "x"}'],
        "payload_bytes": [9, 11, 11],
        "received_at": [now] * 3,
    }
    retrain = {
        "event_id": ["r-1", "r-2"], "text": ["meh", "hmm"], "p_bearish": [0.3, 0.35], "p_neutral": [0.4, 0.3],
        "p_bullish": [0.3, 0.35], "label": ["neutral", "bearish"], "confidence": [0.4, 0.35],
        "reason": ["low_confidence<0.55"] * 2, "model_version": ["test-v1"] * 2, "flagged_at": [now] * 2,
    }  # fmt: skip
    writer = writer_for(client)
    for _ in range(2):
        write(writer, "dlq_events", dlq, "dlq/0:7-8", key="dlq_id")
        write(writer, "retrain_samples", retrain, "retrain/0:7-8")
    assert count_and_unique(client, "dlq_events", "dlq_id", "finpulse.news.raw:0:") == (2, 2)
    assert count_and_unique(client, "retrain_samples", "event_id", "r-") == (2, 2)
