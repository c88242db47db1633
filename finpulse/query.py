"""Read-only SQL against the configured ClickHouse, wherever it is held.

A running worker holds the embedded chDB directory (one process per directory), so queries go through
its HTTP endpoint then; otherwise the database is opened directly. The CLI and the report use this.
"""

from __future__ import annotations

import httpx

from finpulse.settings import Settings
from finpulse.sinks.exceptions import SinkError
from finpulse.sinks.sql import QueryResult, check_read_only, run_query


class QueryError(RuntimeError):
    """The query was refused or failed; the message says why."""


def query(settings: Settings, sql: str, *, timeout_s: float = 120.0) -> QueryResult:
    check_read_only(sql)
    from finpulse.streams.worker import running_worker

    worker = running_worker(settings)
    if worker is not None:
        response = httpx.post(f"{worker.url}/sql", params={"format": "json"}, content=sql, timeout=timeout_s)
        body = response.json()
        if response.status_code != 200:
            raise QueryError(str(body.get("error")))
        return QueryResult.from_json(body)

    from finpulse.sinks.clickhouse import get_client
    from finpulse.sinks.migrations import migrate

    try:
        client = get_client(settings.resolved_clickhouse_dsn)
    except SinkError as error:
        raise QueryError(f"cannot query ClickHouse: {error}") from None
    try:
        migrate(client)
        return run_query(client, sql, timeout_s=timeout_s)
    except SinkError as error:
        raise QueryError(f"cannot query ClickHouse: {error}") from None
    except Exception as error:  # ClickHouse's own message names what is wrong with the query
        raise QueryError(str(error)) from None
    finally:
        client.close()  # chDB holds one data directory per process: let the next reader have it
