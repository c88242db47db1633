"""Migrations on a real chDB: every table from the first start, applied once, edits refused."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver import Client

from finpulse.schemas import RetrainSample, ScoredEvent
from finpulse.sinks.exceptions import MigrationError
from finpulse.sinks.migrations import MIGRATIONS_TABLE, available_migrations, migrate
from finpulse.sinks.writer import ClickHouseWriter
from tests.integration.sinks.conftest import OpenClient
from tests.integration.sinks.support import ids, write_scored

pytestmark = pytest.mark.integration

TABLES = ("scored_events", "dlq_events", "retrain_samples")


@pytest.fixture(scope="module")
def fresh(open_client: OpenClient) -> Client:
    return open_client()


def columns_of(client: Client, table: str) -> dict[str, str]:
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        parameters={"t": table},
    ).result_rows
    return dict(rows)


def test_first_migration_creates_every_table_then_nothing_is_pending(fresh: Client) -> None:
    assert migrate(fresh) == [m.name for m in available_migrations()]
    assert migrate(fresh) == []
    tables = {name for (name,) in fresh.query("SHOW TABLES").result_rows}
    assert set(TABLES) | {MIGRATIONS_TABLE} <= tables
    recorded = fresh.query(
        f"SELECT version, count() FROM {MIGRATIONS_TABLE} GROUP BY version ORDER BY version"
    ).result_rows
    assert recorded == [(m.version, 1) for m in available_migrations()]


def test_scored_events_holds_every_field_of_a_scored_event(fresh: Client) -> None:
    columns = columns_of(fresh, "scored_events")
    assert set(ScoredEvent.model_fields) <= set(columns)
    assert {"primary_ticker", "stored_at", "source_topic", "partition", "offset"} <= set(columns)
    assert columns["event_time"] == "DateTime64(3, 'UTC')"
    assert columns["scored_at"] == "DateTime64(6, 'UTC')"
    assert columns["tickers"] == "Array(LowCardinality(String))"


def test_retrain_samples_holds_every_field_of_a_sample(fresh: Client) -> None:
    assert set(RetrainSample.model_fields) <= set(columns_of(fresh, "retrain_samples"))


def test_dlq_events_holds_the_contract_columns(fresh: Client) -> None:
    contract = {
        "dlq_id",
        "reason",
        "error",
        "source_topic",
        "partition",
        "offset",
        "payload_sha256",
        "payload_head",
    }
    assert contract | {"payload_bytes", "received_at"} <= set(columns_of(fresh, "dlq_events"))


def table_info(client: Client, table: str, fields: str) -> tuple:
    return client.query(
        f"SELECT {fields} FROM system.tables WHERE database = currentDatabase() AND name = {{t:String}}",
        parameters={"t": table},
    ).result_rows[0]


def test_tables_are_plain_merge_trees_with_a_dedup_window(fresh: Client) -> None:
    for table in TABLES:
        engine, ddl = table_info(fresh, table, "engine, create_table_query")
        assert engine == "MergeTree", table
        assert "non_replicated_deduplication_window = 1000" in ddl, table


def test_scored_events_is_ordered_per_ticker_and_time(fresh: Client) -> None:
    sorting_key, partition_key = table_info(fresh, "scored_events", "sorting_key, partition_key")
    assert sorting_key == "primary_ticker, event_time, event_id"
    assert partition_key == "toYYYYMM(event_time)"


def test_the_existence_check_reads_the_event_id_projection(fresh: Client) -> None:
    migrate(fresh)
    write_scored(ClickHouseWriter(fresh, retry_max_s=1), ids("projection", 0, 100), "projection")
    plan = fresh.query(
        "EXPLAIN indexes = 1, projections = 1 SELECT event_id FROM scored_events WHERE event_id IN ('a', 'b')"
    ).result_rows
    assert any("by_event_id" in line for (line,) in plan)


def test_a_migration_edited_after_it_was_applied_is_refused(fresh: Client) -> None:
    migrate(fresh)
    first = available_migrations()[0]

    def record_checksum(checksum: str) -> None:
        fresh.command(
            f"ALTER TABLE {MIGRATIONS_TABLE} UPDATE checksum = {{c:String}} WHERE version = {{v:String}}",
            parameters={"c": checksum, "v": first.version},
            settings={"mutations_sync": 2},
        )

    record_checksum("edited")
    try:
        with pytest.raises(MigrationError, match=f"migration {first.name} was changed after it was applied"):
            migrate(fresh)
    finally:
        record_checksum(first.checksum)
    assert migrate(fresh) == []
