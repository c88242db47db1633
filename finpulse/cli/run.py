"""``finpulse worker``, ``finpulse broker`` and ``finpulse replay``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from finpulse.cli.common import bootstrap_servers
from finpulse.cli.console import err
from finpulse.settings import get_settings


def worker(
    loglevel: Annotated[str, typer.Option(help="Worker log level.")] = "info",
) -> None:
    """Run the Faust worker against the configured broker and ClickHouse (embedded when unset)."""
    from finpulse.rules import RulesError
    from finpulse.streams.web import ExposedEndpointError
    from finpulse.streams.worker import run_worker

    try:
        run_worker(get_settings(), loglevel=loglevel)
    except (RulesError, ExposedEndpointError) as error:
        err.print(str(error), style="red", markup=False)
        raise typer.Exit(2) from None


def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to listen on.")] = 9092,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) in the foreground."""
    from finpulse.streams.broker import EmbeddedBroker
    from finpulse.streams.topics import ensure_topics

    settings = get_settings()
    with EmbeddedBroker(port=port) as embedded:
        asyncio.run(ensure_topics(settings, embedded.bootstrap_servers))
        err.print(f"[bold green]broker listening on {embedded.bootstrap_servers}[/] (Ctrl-C stops it)")
        err.print(f"  export FINPULSE_BROKER={embedded.bootstrap_servers}")
        try:
            embedded.wait()
        except KeyboardInterrupt:
            err.print("stopping broker")


def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSONL of news/posts.")],
    kind: Annotated[str | None, typer.Option(help="news or social; default: inferred per row.")] = None,
    text_col: Annotated[str, typer.Option(help="Column holding the text (the headline for news).")] = "text",
    rate: Annotated[float | None, typer.Option(help="Messages per second; default as fast as possible.")] = None,
) -> None:
    """Publish a CSV or JSONL file to the input topics."""
    from rich.progress import Progress

    from finpulse.harness import Outbound, produce
    from finpulse.replay import ReplayError, ReplayRecord, iter_records
    from finpulse.streams.produce import OutboundRecord

    if kind not in (None, "news", "social"):
        err.print(f"[red]--kind must be news or social, not {kind!r}[/]")
        raise typer.Exit(2)
    settings = get_settings()
    bootstrap = bootstrap_servers(settings)
    try:
        records = iter_records(file, kind=kind, text_col=text_col)
    except ReplayError as error:
        err.print(f"[red]cannot replay {file}:[/] {error}")
        raise typer.Exit(2) from None
    bad_rows: list[ReplayRecord] = []

    def outbound(record: ReplayRecord) -> Outbound:
        if record.error:  # published all the same: the worker's validation sends it to the DLQ with the reason
            bad_rows.append(record)
        return Outbound(record.topic_name, OutboundRecord(key=record.key, value=record.value))

    with Progress(console=err, transient=False) as progress:
        task = progress.add_task(f"replaying {file.name}", total=None)
        sent = asyncio.run(
            produce(
                bootstrap,
                settings,
                (outbound(record) for record in records),
                rate=rate,
                on_progress=lambda n: progress.update(task, completed=n),
            )
        )
    err.print(f"published {sent} messages from {file} to {bootstrap}")
    if bad_rows:
        err.print(f"[yellow]{len(bad_rows)} rows are not valid events and will land in the DLQ[/], e.g.:")
        for record in bad_rows[:5]:
            err.print(f"  row {record.row}: {record.error}")
