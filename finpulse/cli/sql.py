"""``finpulse sql``: read-only SQL against the configured ClickHouse."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from finpulse.cli.console import err, out
from finpulse.settings import get_settings


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def sql(
    query: Annotated[str, typer.Argument(help='e.g. "SELECT count() FROM scored_events"')],
    format: Annotated[
        Format, typer.Option("--format", "-f", help="table, csv or json (csv/json on stdout).")
    ] = Format.table,
) -> None:
    """Run a read-only query (DDL/DML refused). Goes through the running worker when it holds the database.

    An answer larger than FINPULSE_SQL_MAX_ROWS rows or FINPULSE_SQL_MAX_BYTES bytes is refused; a worker
    with FINPULSE_SQL_TOKEN set is sent that token.
    """
    from finpulse.query import QueryError
    from finpulse.query import query as run
    from finpulse.sinks.sql import ReadOnlyQueryError, render_table, to_csv, to_json

    try:
        result = run(get_settings(), query)
    except ReadOnlyQueryError as error:
        err.print(f"[red]refused:[/] {error}")
        raise typer.Exit(2) from None
    except QueryError as error:
        err.print(f"[red]query failed:[/] {error}")
        raise typer.Exit(1) from None

    if format is Format.csv:
        out.file.write(to_csv(result))
    elif format is Format.json:
        out.file.write(to_json(result) + "\n")
    else:
        (out if out.is_terminal else err).print(render_table(result))
