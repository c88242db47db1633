"""``finpulse demo``: the whole pipeline on the built-in feed, with a summary at the end."""

from __future__ import annotations

import shutil
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from finpulse.cli.console import err
from finpulse.settings import Settings, get_settings


def _reset_embedded_clickhouse(settings: Settings) -> None:
    from finpulse.streams.worker import running_worker

    if settings.clickhouse_dsn or running_worker(settings) is not None:
        return  # a configured server, or a worker that holds the data: never wipe those
    shutil.rmtree(settings.data_dir / "clickhouse", ignore_errors=True)


def _summary_table(summary) -> Table:  # noqa: ANN001 - RunSummary, imported lazily
    table = Table(title=f"finpulse demo — scenario {summary.scenario!r}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("events sent / stored", f"{summary.events_sent:,} / {summary.events_stored:,}")
    table.add_row("throughput (produce → stored)", f"{summary.events_per_s:,.0f} events/s")
    table.add_row(
        "latency produce → stored p50 / p95 / p99",
        f"{summary.latency_p50_ms:,.0f} / {summary.latency_p95_ms:,.0f} / {summary.latency_p99_ms:,.0f} ms",
    )
    for name, count in summary.rows.items():
        table.add_row(f"rows in {name}", f"{count:,}")
    table.add_row("DLQ (rejected messages)", f"{summary.dlq:,}")
    table.add_row("labels", ", ".join(f"{k} {v:,}" for k, v in sorted(summary.labels.items())))
    table.add_row("most mentioned", ", ".join(f"{t} {n} ({s:+.2f})" for t, n, s in summary.top_tickers))
    table.add_row("alerts fired", "\n".join(summary.alerts) or "none")
    table.add_row("model", summary.model_version)
    table.add_row("micro-batches", f"{summary.batches:,}")
    return table


def demo(
    events: Annotated[int | None, typer.Option(help="Events to send; default: the scenario's.")] = None,
    scenario: Annotated[str, typer.Option(help="steady or shock.")] = "steady",
    rate: Annotated[float, typer.Option(help="Events per second sent; 0 = as fast as possible.")] = 500.0,
    seed: Annotated[int, typer.Option(help="Seed of the built-in feed.")] = 7,
    fresh: Annotated[
        bool, typer.Option(help="Start from empty embedded tables (--no-fresh appends).")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Run broker + worker + ClickHouse embedded, feed them, wait until every event is stored, summarize."""
    import json

    from finpulse.demo import run_demo
    from finpulse.feed import SCENARIOS

    if scenario not in SCENARIOS:
        err.print(f"[red]unknown scenario {scenario!r}[/]: choose one of {', '.join(SCENARIOS)}")
        raise typer.Exit(2)
    settings = get_settings()
    if fresh:
        _reset_embedded_clickhouse(settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err) as progress:
        starting = progress.add_task("starting broker, ClickHouse and worker", total=None)
        sent_task = progress.add_task("sent", total=None, visible=False)
        stored_task = progress.add_task("stored", total=None, visible=False)

        def on_ready(total: int) -> None:
            progress.update(starting, visible=False)
            progress.update(sent_task, total=total, visible=True)
            progress.update(stored_task, total=total, visible=True)

        summary = run_demo(
            settings,
            scenario=scenario,
            events=events,
            seed=seed,
            rate=rate or None,
            on_ready=on_ready,
            on_sent=lambda n: progress.update(sent_task, completed=n),
            on_stored=lambda n: progress.update(stored_task, completed=n),
        )
        progress.update(stored_task, completed=summary.events_stored)
    err.print(_summary_table(summary))
    err.print(
        f'data kept in {settings.data_dir.resolve()} — try: finpulse sql "SELECT count() FROM scored_events"'
    )
    if json_output:
        print(json.dumps(summary.as_dict()))
