"""``finpulse report``: the opinion report (Markdown, HTML and PNG charts) from the ClickHouse data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from finpulse.cli.console import err, out
from finpulse.settings import get_settings


def report(
    ticker: Annotated[
        str | None, typer.Option("--ticker", "-t", help="One ticker, e.g. NVDA; default: the whole market.")
    ] = None,
    since: Annotated[
        str,
        typer.Option(help="How far back from the newest event: 90m, 6h, 24h, 7d, 2w, or an ISO 8601 start time."),
    ] = "24h",
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder for report.md, report.html and the charts [default: reports/<UTC time>]."
        ),
    ] = None,
) -> None:
    """Write an opinion report: summary, sentiment and buzz, top movers, source mix, alerts.

    Prints the written paths on stdout, one per line; everything else goes to stderr.
    """
    from finpulse.query import QueryError
    from finpulse.report import ReportError, gather, plain, summarize, write_report

    folder = out_dir or Path("reports") / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        with err.status("querying ClickHouse…"):
            data = gather(get_settings(), ticker=ticker, since=since)
        with err.status("drawing charts…"):
            files = write_report(data, folder)
    except ReportError as error:
        err.print(f"[yellow]no report:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    except QueryError as error:
        err.print(f"[red]query failed:[/] {escape(str(error))}")
        raise typer.Exit(1) from None

    err.print(
        f"[bold]Opinion report: {escape(data.subject)}[/] "
        f"({data.since:%Y-%m-%d %H:%M} to {data.as_of:%Y-%m-%d %H:%M} UTC)"
    )
    for line in summarize(data):
        err.print(f"  • {plain(line)}", markup=False, highlight=False)
    for path in files.all():
        out.print(str(path), markup=False, highlight=False)
