"""Read-only SQL on a real chDB: results and formats, and what ClickHouse itself still refuses."""

from __future__ import annotations

import json

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from finpulse.sinks.sql import ReadOnlyQueryError, run_query, to_csv, to_json
from finpulse.sinks.writer import ClickHouseWriter
from tests.integration.sinks.support import count_and_unique, ids, write_scored

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stored(client: Client) -> Client:
    write_scored(ClickHouseWriter(client, retry_max_s=5), ids("sql", 0, 30), "sql")
    return client


def test_a_select_returns_names_types_and_rows(stored: Client) -> None:
    result = run_query(stored, "SELECT count() AS n, max(event_time) AS latest FROM scored_events;")
    assert result.columns == ["n", "latest"]
    assert result.types == ["UInt64", "DateTime64(3, 'UTC')"]
    assert result.rows[0][0] == 30
    assert result.rows[0][1].tzinfo is not None  # UTC columns come back timezone-aware


def test_json_and_csv_of_a_real_result(stored: Client) -> None:
    result = run_query(
        stored, "SELECT event_id, tickers, event_time FROM scored_events ORDER BY event_id LIMIT 2"
    )
    document = json.loads(to_json(result))
    assert [row["event_id"] for row in document["rows"]] == ["sql-000000", "sql-000001"]
    assert document["rows"][1]["tickers"] == ["AAPL", "MSFT"]
    assert document["rows"][0]["event_time"].endswith("+00:00")
    assert to_csv(result).splitlines()[0] == "event_id,tickers,event_time"


@pytest.mark.parametrize(
    "query",
    ["SHOW TABLES", "DESCRIBE TABLE scored_events", "EXPLAIN SELECT 1", "EXISTS TABLE dlq_events",
     "SELECT name FROM system.tables WHERE database = currentDatabase()",
     "SELECT count() FROM scored_events WHERE text LIKE '%beats%'"],
)  # fmt: skip
def test_read_statements_run(stored: Client, query: str) -> None:
    assert run_query(stored, query).rows


def test_repeated_column_names_are_made_unique(stored: Client) -> None:
    result = run_query(stored, "SELECT 1, 1, 2")
    assert result.columns == ["1", "1_2", "2"]
    assert json.loads(to_json(result))["rows"] == [{"1": 1, "1_2": 1, "2": 2}]


def test_refused_queries_never_reach_clickhouse(stored: Client) -> None:
    with pytest.raises(ReadOnlyQueryError):
        run_query(stored, "DROP TABLE scored_events")
    with pytest.raises(ReadOnlyQueryError):
        run_query(stored, "SELECT 1; TRUNCATE TABLE scored_events")
    assert count_and_unique(stored, prefix="sql-") == (30, 30)


def test_clickhouse_readonly_mode_is_the_second_line_of_defence(stored: Client) -> None:
    """What the guard lets through still runs with readonly=1: no reading local files through file()."""
    with pytest.raises(DatabaseError, match="readonly"):
        run_query(stored, "SELECT * FROM file('/etc/hostname', 'LineAsString')")


def test_a_shared_client_can_still_write_after_read_only_queries(stored: Client) -> None:
    """readonly rides per query; it must not stick to the session the writer shares."""
    with pytest.raises(DatabaseError):
        run_query(stored, "SELECT * FROM file('/etc/hostname', 'LineAsString')")
    run_query(stored, "SELECT 1")
    result = write_scored(ClickHouseWriter(stored, retry_max_s=1), ids("after-sql", 0, 5), "after")
    assert result.inserted == 5


def test_a_timeout_stops_a_long_query(stored: Client) -> None:
    with pytest.raises(DatabaseError, match="TIMEOUT_EXCEEDED"):
        run_query(stored, "SELECT sum(cityHash64(number)) FROM numbers(100000000000)", timeout_s=0.3)
