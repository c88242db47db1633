"""``finpulse bench …``: speed measured side by side in one run."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finpulse.cli.console import err
from finpulse.settings import get_settings

bench_app = typer.Typer(help="Benchmarks: ratios measured side by side in one run.", no_args_is_help=True)


@bench_app.command("pipeline")
def pipeline(
    events: Annotated[int, typer.Option(help="Events sent through the pipeline (after a warm-up).")] = 10_000,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Events/s of the embedded pipeline and of the model alone on the same texts, their ratio, latencies."""
    from finpulse.bench import bench_pipeline

    with err.status(f"benchmarking the embedded pipeline on {events:,} events, then the model alone"):
        result = bench_pipeline(get_settings(), events=events)
    if json_output:
        print(result.to_json())
        return
    table = Table(title=f"finpulse bench pipeline — {result.events:,} events, model {result.model_version}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "pipeline (produce → stored in ClickHouse)", f"{result.pipeline_events_per_s:,.0f} events/s"
    )
    table.add_row("model alone (normalize + tokenize + infer)", f"{result.model_only_seq_per_s:,.0f} seq/s")
    table.add_row("pipeline / model", f"{result.pipeline_to_model_ratio:.2f}")
    table.add_row(
        "pipeline latency p50 / p95 / p99",
        f"{result.pipeline_p50_ms:,.0f} / {result.pipeline_p95_ms:,.0f} / {result.pipeline_p99_ms:,.0f} ms",
    )
    table.add_row(
        "model batch latency p50 / p99",
        f"{result.model_only_batch_p50_ms:,.1f} / {result.model_only_batch_p99_ms:,.1f} ms",
    )
    table.add_row(
        "ClickHouse inserts", f"{result.inserts_per_s:,.2f}/s, {result.rows_per_insert:,.0f} rows each"
    )
    err.print(table)
