"""Versioned schema migrations: ``sinks/schema/NNNN_name.sql``, applied once each, in order.

Applied versions are recorded in ``schema_migrations`` with the file's SHA-256. ``migrate`` applies
what is pending and returns the names it applied (an empty list once the schema is current), so the
worker, the CLI and the tests can all call it at start-up. Statements use ``IF NOT EXISTS`` so that two
processes migrating a server at the same moment both succeed. A migration edited after it was applied
is refused: add a new file instead.

A file holds one or more statements, each ending with ``;`` at the end of a line; lines starting with
``--`` are comments.

A change to a table's sort key cannot be an ``ALTER``; it is a *rebuild*: ``CREATE TABLE t__next`` with
the new shape, then the statements that fill ``t__next`` from ``t`` (until the next statement that is no
``INSERT INTO t__next``). The runner exchanges ``t`` and ``t__next`` and drops the old table. A rebuild
is idempotent, so an interrupted migration can simply run again: any ``t__next`` left over is dropped
first (a partial copy, or the old table after an exchange), and a table whose columns already are those
of ``t__next`` is left alone. Unlike plain statements, a rebuild must run while no worker writes to ``t``
(the worker migrates at start-up, before it consumes; chDB lets one process at a time open its data).
Materialized views that read ``t`` follow its name; the runner checks that they still do after the
exchange, and inserts into ``t__next`` do not reach them, so a view's target is not fed twice.

Example:
    >>> migrate(get_client("chdb:///tmp/finpulse-doc/clickhouse"))  # doctest: +SKIP
    ['0001_core']
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver import Client

from finpulse.sinks.exceptions import MigrationError

log = logging.getLogger("finpulse.sinks.migrations")

MIGRATIONS_TABLE = "schema_migrations"
_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<label>[a-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
_REBUILD_START = re.compile(r"^CREATE TABLE (?P<table>\w+)__next\b")
_STAGING_SUFFIX = "__next"

_CREATE_MIGRATIONS_TABLE = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    version String,
    name String,
    checksum String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        code = "\n".join(line for line in self.sql.splitlines() if not line.lstrip().startswith("--"))
        return [statement.strip() for statement in _STATEMENT_END.split(code) if statement.strip()]


def available_migrations() -> list[Migration]:
    """The migrations shipped with the package, ordered by version."""
    schema = resources.files("finpulse.sinks") / "schema"
    migrations = []
    for entry in schema.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            name = entry.name.removesuffix(".sql")
            migrations.append(Migration(match["version"], name, entry.read_text("utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return migrations


def applied_checksums(client: Client) -> dict[str, str]:
    """Version → checksum of each migration recorded in ``schema_migrations``."""
    client.command(_CREATE_MIGRATIONS_TABLE)
    rows = client.query(f"SELECT version, any(checksum) FROM {MIGRATIONS_TABLE} GROUP BY version").result_rows
    return {version: checksum for version, checksum in rows}


def migrate(client: Client, *, target: str | None = None) -> list[str]:
    """Apply every pending migration in version order (up to version ``target``); return the names applied."""
    applied = applied_checksums(client)
    done: list[str] = []
    for migration in available_migrations():
        if target is not None and migration.version > target:
            break
        recorded = applied.get(migration.version)
        if recorded is not None:
            _refuse_if_edited(migration, recorded)
            continue
        _apply(client, migration)
        done.append(migration.name)
    return done


@dataclass
class Rebuild:
    """One table rebuilt with a new shape: ``create`` makes ``<table>__next``, ``fill`` copies into it."""

    table: str
    create: str
    fill: list[str]

    @property
    def staging(self) -> str:
        return self.table + _STAGING_SUFFIX


def steps(statements: list[str]) -> list[str | Rebuild]:
    """Statements in order, with each rebuild (its ``CREATE`` and the ``INSERT``s after it) as one step."""
    grouped: list[str | Rebuild] = []
    for statement in statements:
        start = _REBUILD_START.match(statement)
        last = grouped[-1] if grouped else None
        if start:
            grouped.append(Rebuild(start["table"], statement, []))
        elif isinstance(last, Rebuild) and statement.startswith(f"INSERT INTO {last.staging}"):
            last.fill.append(statement)
        else:
            grouped.append(statement)
    return grouped


def _apply(client: Client, migration: Migration) -> None:
    for step in steps(migration.statements()):
        if isinstance(step, Rebuild):
            _rebuild(client, migration, step)
        else:
            _run(client, migration, step)
    client.insert(
        MIGRATIONS_TABLE,
        [[migration.version, migration.name, migration.checksum]],
        column_names=["version", "name", "checksum"],
    )
    log.info("applied ClickHouse migration %s", migration.name)


def _run(client: Client, migration: Migration, statement: str) -> None:
    try:
        client.command(statement)
    except Exception as error:
        raise MigrationError(f"migration {migration.name} failed: {error}\n-- statement:\n{statement}") from error


def _rebuild(client: Client, migration: Migration, rebuild: Rebuild) -> None:
    table, staging = rebuild.table, rebuild.staging
    _run(client, migration, f"DROP TABLE IF EXISTS {staging}")
    _run(client, migration, rebuild.create)
    if _columns(client, table) == _columns(client, staging):
        _run(client, migration, f"DROP TABLE {staging}")
        log.info("%s already has the shape of migration %s", table, migration.name)
        return
    views = _dependent_views(client, table)
    for statement in rebuild.fill:
        _run(client, migration, statement)
    _run(client, migration, f"EXCHANGE TABLES {table} AND {staging}")
    if _dependent_views(client, table) != views:
        raise MigrationError(
            f"migration {migration.name}: after exchanging {table} and {staging}, the views reading {table} "
            f"are {_dependent_views(client, table)} instead of {views}: recreate the missing views (the old "
            f"table stays as {staging} until the migration runs again)"
        )
    _run(client, migration, f"DROP TABLE {staging}")
    log.info("rebuilt %s for migration %s", table, migration.name)


def _columns(client: Client, table: str) -> list[tuple[str, str]]:
    rows = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
        "ORDER BY position",
        parameters={"t": table},
    ).result_rows
    return [(name, type_) for name, type_ in rows]


def _dependent_views(client: Client, table: str) -> list[str]:
    rows = client.query(
        "SELECT dependencies_table FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    return sorted(rows[0][0]) if rows else []


def _refuse_if_edited(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.name} was changed after it was applied to this database "
            f"(checksum {recorded_checksum[:12]}… recorded, {migration.checksum[:12]}… now). "
            "Put schema changes in a new migration file; for a throwaway embedded database, "
            "delete its directory."
        )
