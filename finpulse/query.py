"""Read-only SQL against the configured ClickHouse, wherever it is held.

A running worker holds the embedded chDB directory (one process per directory), so queries go through
its HTTP endpoint then, with ``FINPULSE_SQL_TOKEN`` as the bearer token when one is set; otherwise the
database is opened directly. Either way the answer is capped by ``FINPULSE_SQL_MAX_ROWS`` and
``FINPULSE_SQL_MAX_BYTES``. The CLI and the report use this.
"""

from __future__ import annotations

import httpx

from finpulse.settings import Settings
from finpulse.sinks.exceptions import ResultTooLargeError, SinkError
from finpulse.sinks.sql import QueryResult, ResultLimits, check_read_only, run_query


class QueryError(RuntimeError):
    """The query was refused or failed; the message says why."""


def worker_headers(settings: Settings) -> dict[str, str]:
    """The headers a client of a worker's HTTP endpoint sends: the bearer token, when one is set."""
    token = settings.sql_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


def query(settings: Settings, sql: str, *, timeout_s: float = 120.0) -> QueryResult:
    check_read_only(sql)
    from finpulse.streams.worker import running_worker

    worker = running_worker(settings)
    if worker is not None:
        return _through_worker(settings, worker.url, sql, timeout_s)

    from finpulse.sinks.clickhouse import get_client
    from finpulse.sinks.migrations import migrate

    try:
        client = get_client(settings.resolved_clickhouse_dsn)
    except SinkError as error:
        raise QueryError(f"cannot query ClickHouse: {error}") from None
    try:
        migrate(client)
        return run_query(client, sql, timeout_s=timeout_s, limits=ResultLimits.from_settings(settings))
    except ResultTooLargeError as error:
        raise QueryError(str(error)) from None
    except SinkError as error:
        raise QueryError(f"cannot query ClickHouse: {error}") from None
    except Exception as error:  # ClickHouse's own message names what is wrong with the query
        raise QueryError(str(error)) from None
    finally:
        client.close()  # chDB holds one data directory per process: let the next reader have it


def _through_worker(settings: Settings, url: str, sql: str, timeout_s: float) -> QueryResult:
    response = httpx.post(
        f"{url}/sql", params={"format": "json"}, content=sql, headers=worker_headers(settings), timeout=timeout_s
    )
    body = response.json()
    if response.status_code != 200:
        raise QueryError(str(body.get("error")))
    return QueryResult.from_json(body)
