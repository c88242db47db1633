"""Versioned schema migrations: ``sinks/schema/NNNN_name.sql``, applied once each, in order.

Applied versions are recorded in ``schema_migrations`` with the file's SHA-256. ``migrate`` applies
what is pending and returns the names it applied (an empty list once the schema is current), so the
worker, the CLI and the tests can all call it at start-up. Statements use ``IF NOT EXISTS`` so that two
processes migrating a server at the same moment both succeed. A migration edited after it was applied
is refused: add a new file instead.

A file holds one or more statements, each ending with ``;`` at the end of a line; lines starting with
``--`` are comments.

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


def migrate(client: Client) -> list[str]:
    """Apply every pending migration in version order; return the names applied."""
    applied = applied_checksums(client)
    done: list[str] = []
    for migration in available_migrations():
        recorded = applied.get(migration.version)
        if recorded is not None:
            _refuse_if_edited(migration, recorded)
            continue
        _apply(client, migration)
        done.append(migration.name)
    return done


def _apply(client: Client, migration: Migration) -> None:
    for statement in migration.statements():
        try:
            client.command(statement)
        except Exception as error:
            raise MigrationError(
                f"migration {migration.name} failed: {error}\n-- statement:\n{statement}"
            ) from error
    client.insert(
        MIGRATIONS_TABLE,
        [[migration.version, migration.name, migration.checksum]],
        column_names=["version", "name", "checksum"],
    )
    log.info("applied ClickHouse migration %s", migration.name)


def _refuse_if_edited(migration: Migration, recorded_checksum: str) -> None:
    if recorded_checksum != migration.checksum:
        raise MigrationError(
            f"migration {migration.name} was changed after it was applied to this database "
            f"(checksum {recorded_checksum[:12]}… recorded, {migration.checksum[:12]}… now). "
            "Put schema changes in a new migration file; for a throwaway embedded database, "
            "delete its directory."
        )
