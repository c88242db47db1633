"""Migrations on a real chDB: every table from the first start, applied once, edits refused, and the
event-identity rebuild (0005) of tables that hold rows, run once or cut short and run again."""

from __future__ import annotations

from typing import Any

import pytest
from clickhouse_connect.driver import Client
from clickhouse_connect.driver.exceptions import OperationalError

from finpulse.identity import event_id
from finpulse.schemas import RetrainSample, ScoredEvent
from finpulse.sinks.exceptions import MigrationError
from finpulse.sinks.migrations import (
    MIGRATIONS_TABLE,
    Rebuild,
    _rebuild,
    applied_checksums,
    available_migrations,
    migrate,
    steps,
)
from finpulse.sinks.writer import ClickHouseWriter
from tests.integration.sinks.conftest import OpenClient
from tests.integration.sinks.support import ids, scored_columns, write, write_scored

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


# --- 0005_event_identity: stored ids become <kind>:<source>:<id> -------------------------------------------

IDENTITY = "0005"
OLD_SOURCES = [("news", "reuters"), ("news", "bloomberg"), ("social", "x"), ("news", "odd:feed 100%")]
SCORED_LEFT_AS_THEY_WERE = (
    "kind, source, tickers, primary_ticker, text, label, p_bearish, p_neutral, p_bullish, score, confidence, "
    "model_version, event_time, ingested_at, scored_at, stored_at, source_topic, partition, offset"
)


@pytest.fixture
def old_client(open_client: OpenClient, request: pytest.FixtureRequest) -> Client:
    """A client on a database of its own (Atomic, as on a ClickHouse server) migrated up to 0004."""
    client = open_client()
    database = f"before_{IDENTITY}_{abs(hash(request.node.name)):x}"
    client.command(f"CREATE DATABASE {database} ENGINE = Atomic")
    client.command(f"USE {database}")
    migrate(client, target="0004")
    return client


def store_as_before_0005(client: Client, prefix: str, n: int = 12) -> dict[str, tuple[str, str]]:
    """Rows as the pipeline stored them before 0005 (event_id = the raw id); returns id → (kind, source)."""
    raw_ids = ids(prefix, 0, n)
    columns = scored_columns(raw_ids)
    del columns["source_id"]
    columns["kind"] = [OLD_SOURCES[i % len(OLD_SOURCES)][0] for i in range(n)]
    columns["source"] = [OLD_SOURCES[i % len(OLD_SOURCES)][1] for i in range(n)]
    client.insert("scored_events", list(columns.values()), column_names=list(columns), column_oriented=True)
    samples = raw_ids[:3] + [f"{prefix}-orphan"]  # an orphan: no stored event of that id (never written so)
    now = columns["stored_at"][0]
    client.insert(
        "retrain_samples",
        [[i, f"text {i}", 0.3, 0.4, 0.3, "neutral", 0.4, "low_confidence<0.55", "test-v1", now] for i in samples],
        column_names=["event_id", "text", "p_bearish", "p_neutral", "p_bullish", "label", "confidence", "reason",
                      "model_version", "flagged_at"],
    )  # fmt: skip
    return {raw: (columns["kind"][i], columns["source"][i]) for i, raw in enumerate(raw_ids)}


def minute_state(client: Client) -> list[tuple]:
    return client.query(
        "SELECT scope, key, sum(events) FROM opinion_minute_state GROUP BY scope, key ORDER BY scope, key"
    ).result_rows


def assert_upgraded(client: Client, before: dict[str, tuple[str, str]], old_rows: list[tuple], state: list) -> None:
    """Every old row once, under its namespaced id, the rest of it unchanged; views and the index intact."""
    assert IDENTITY in applied_checksums(client)
    rows = client.query("SELECT event_id, source_id FROM scored_events").result_rows
    assert sorted(rows) == sorted((event_id(*before[raw], raw), raw) for raw in before)
    assert client.query(f"SELECT {SCORED_LEFT_AS_THEY_WERE} FROM scored_events ORDER BY source_id").result_rows == (
        old_rows
    )
    assert client.query("SELECT count(), uniqExact(event_id) FROM scored_events").result_rows == [
        (len(before), len(before))
    ]
    samples = dict(client.query("SELECT source_id, event_id FROM retrain_samples").result_rows)
    orphan = next(raw for raw in samples if raw.endswith("-orphan"))
    assert samples == {raw: event_id(*before[raw], raw) for raw in samples if raw != orphan} | {orphan: orphan}
    assert minute_state(client) == state  # the copy did not count any event a second time
    tables = {name for (name,) in client.query("SHOW TABLES").result_rows}
    assert not {name for name in tables if name.endswith("__next")}
    sorting_key, ddl = table_info(client, "scored_events", "sorting_key, create_table_query")
    assert sorting_key == "primary_ticker, event_time, event_id" and "PROJECTION by_event_id" in ddl
    assert migrate(client) == []


def snapshot(client: Client) -> tuple[list[tuple], list]:
    old_rows = client.query(f"SELECT {SCORED_LEFT_AS_THEY_WERE} FROM scored_events ORDER BY event_id").result_rows
    return old_rows, minute_state(client)


def test_the_upgrade_namespaces_stored_ids_and_keeps_every_row(old_client: Client) -> None:
    before = store_as_before_0005(old_client, "up")
    old_rows, state = snapshot(old_client)
    assert migrate(old_client) == ["0005_event_identity"]
    assert_upgraded(old_client, before, old_rows, state)


def test_after_the_upgrade_new_events_reach_the_index_views_and_dashboards(old_client: Client) -> None:
    store_as_before_0005(old_client, "views")
    migrate(old_client)
    markets_before = dict(old_client.query("SELECT key, sum(events) FROM opinion_minute_state "
                                           "WHERE scope = 'market' GROUP BY key").result_rows)  # fmt: skip
    new = scored_columns([event_id("news", "reuters", "views-new")])
    new["source_id"] = ["views-new"]
    assert write(ClickHouseWriter(old_client, retry_max_s=1), "scored_events", new, "views-new").inserted == 1
    markets = dict(old_client.query("SELECT key, sum(events) FROM opinion_minute_state "
                                    "WHERE scope = 'market' GROUP BY key").result_rows)  # fmt: skip
    assert markets["all"] == markets_before["all"] + 1
    breakdown = old_client.query(
        "SELECT kind, source, events FROM v_source_breakdown(since = '2000-01-01 00:00:00', "
        "until = '2100-01-01 00:00:00', ticker = '') ORDER BY kind, source"
    ).result_rows
    assert sum(events for _, _, events in breakdown) == 13
    assert ("news", "odd:feed 100%", 3) in breakdown
    plan = old_client.query(
        "EXPLAIN indexes = 1, projections = 1 SELECT event_id FROM scored_events WHERE event_id IN ('a', 'b')"
    ).result_rows
    assert any("by_event_id" in line for (line,) in plan)


class FailsOnce:
    """The real client, except that the first statement starting with ``prefix`` fails, after it ran
    (``landed``) or before: a migration cut short at that point, as by a crash or a lost connection."""

    def __init__(self, client: Client, prefix: str, *, landed: bool) -> None:
        self._client = client
        self._prefix = prefix
        self._landed = landed
        self.failed = False

    def _maybe_fail(self, text: str, run: Any) -> Any:
        if self.failed or not text.startswith(self._prefix):
            return run()
        self.failed = True
        if self._landed:
            run()
        raise OperationalError(f"connection lost at {self._prefix!r} (injected)")

    def command(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        return self._maybe_fail(sql, lambda: self._client.command(sql, *args, **kwargs))

    def insert(self, table: str, *args: Any, **kwargs: Any) -> Any:
        return self._maybe_fail(f"INSERT INTO {table}", lambda: self._client.insert(table, *args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize(
    ("cut_at", "landed"),
    [
        ("INSERT INTO retrain_samples__next", True),  # copied, not exchanged
        ("EXCHANGE TABLES retrain_samples", True),  # one table done, the other untouched
        ("INSERT INTO scored_events__next", False),  # second copy failed
        ("INSERT INTO scored_events__next", True),  # second copy done, not exchanged
        ("EXCHANGE TABLES scored_events", True),  # exchanged, the old table not dropped
        ("DROP TABLE scored_events__next", False),  # the same, as a failed drop
        (f"INSERT INTO {MIGRATIONS_TABLE}", False),  # all done but not recorded
    ],
)
def test_an_interrupted_upgrade_completes_when_run_again(old_client: Client, cut_at: str, landed: bool) -> None:
    before = store_as_before_0005(old_client, "cut")
    old_rows, state = snapshot(old_client)
    cut = FailsOnce(old_client, cut_at, landed=landed)
    with pytest.raises(MigrationError if cut_at != f"INSERT INTO {MIGRATIONS_TABLE}" else OperationalError):
        migrate(cut)  # type: ignore[arg-type]
    assert cut.failed
    assert migrate(old_client) == ["0005_event_identity"]
    assert_upgraded(old_client, before, old_rows, state)


def test_a_rebuild_already_done_is_skipped(old_client: Client) -> None:
    before = store_as_before_0005(old_client, "twice")
    old_rows, state = snapshot(old_client)
    migrate(old_client)
    (identity,) = [m for m in available_migrations() if m.version == IDENTITY]
    for step in steps(identity.statements()):  # the whole migration again, as a second process would
        if isinstance(step, Rebuild):
            _rebuild(old_client, identity, step)
    assert_upgraded(old_client, before, old_rows, state)


def test_a_rebuild_is_grouped_with_the_inserts_that_fill_it() -> None:
    grouped = steps(["CREATE TABLE t__next (a String) ENGINE = Memory", "INSERT INTO t__next SELECT a FROM t",
                     "CREATE VIEW v AS SELECT 1", "INSERT INTO other SELECT 1"])  # fmt: skip
    assert grouped == [
        Rebuild("t", "CREATE TABLE t__next (a String) ENGINE = Memory", ["INSERT INTO t__next SELECT a FROM t"]),
        "CREATE VIEW v AS SELECT 1",
        "INSERT INTO other SELECT 1",
    ]
