"""``finpulse sql``: read-only SQL against the configured ClickHouse."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import httpx
import typer

from finpulse.cli.console import err, out
from finpulse.settings import get_settings


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def sql(
    query: Annotated[str, typer.Argument(help='e.g. "SELECT count() FROM scored_events"')],
    format: Annotated[Format, typer.Option("--format", "-f", help="table (stderr), csv or json (stdout).")] = Format.table,
) -> None:
    """Run a read-only query (DDL/DML refused). Goes through the running worker when it holds the database."""
    from finpulse.sinks.sql import QueryResult, ReadOnlyQueryError, check_read_only, render_table, to_csv, to_json
    from finpulse.streams.worker import running_worker

    try:
        check_read_only(query)
    except ReadOnlyQueryError as error:
        err.print(f"[red]refused:[/] {error}")
        raise typer.Exit(2) from None

    settings = get_settings()
    worker = running_worker(settings)
    if worker is not None:
        response = httpx.post(f"{worker.url}/sql", params={"format": "json"}, content=query, timeout=120.0)
        body = response.json()
        if response.status_code != 200:
            err.print(f"[red]query failed:[/] {body.get('error')}")
            raise typer.Exit(1)
        result = QueryResult.from_json(body)
    else:
        from finpulse.sinks.clickhouse import get_client
        from finpulse.sinks.exceptions import SinkError
        from finpulse.sinks.migrations import migrate
        from finpulse.sinks.sql import run_query

        try:
            client = get_client(settings.resolved_clickhouse_dsn)
            migrate(client)
            result = run_query(client, query)
        except SinkError as error:
            err.print(f"[red]cannot query ClickHouse:[/] {error}")
            raise typer.Exit(1) from None
        except Exception as error:
            err.print(f"[red]query failed:[/] {error}")
            raise typer.Exit(1) from None

    if format is Format.csv:
        out.file.write(to_csv(result))
    elif format is Format.json:
        out.file.write(to_json(result) + "\n")
    else:
        (out if out.is_terminal else err).print(render_table(result))
