"""The shipped migration files: found as package data, ordered, split into statements."""

from __future__ import annotations

import re

from finpulse.sinks.migrations import Migration, available_migrations


def test_shipped_migrations_are_found_in_version_order() -> None:
    migrations = available_migrations()
    assert migrations, "no migration files found: is sinks/schema/*.sql package data?"
    assert migrations[0].name == "0001_core"
    versions = [m.version for m in migrations]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_core_migration_creates_every_table_idempotently_with_a_dedup_window() -> None:
    statements = available_migrations()[0].statements()
    created = [re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", s).group(1) for s in statements]  # type: ignore[union-attr]
    assert created == ["scored_events", "dlq_events", "retrain_samples"]
    assert all("non_replicated_deduplication_window" in s for s in statements)
    assert all("ReplicatedMergeTree" not in s and "ENGINE = MergeTree" in s for s in statements)


def test_statements_split_at_semicolons_ending_a_line_and_skip_comments() -> None:
    migration = Migration(
        "0002", "0002_x", "-- a comment;\nCREATE TABLE a (s String DEFAULT ';') ENGINE = Memory;\n\nSELECT 1;"
    )
    assert migration.statements() == ["CREATE TABLE a (s String DEFAULT ';') ENGINE = Memory", "SELECT 1"]


def test_checksum_follows_the_text() -> None:
    assert Migration("1", "a", "x").checksum != Migration("1", "a", "y").checksum
