"""The ``finpulse`` command line. Human output goes to stderr; machine output (--json, csv) alone to stdout."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.logging import RichHandler

from finpulse.cli import alerts, bench, chaos, demo, model, report, run, sql

app = typer.Typer(
    name="finpulse",
    help="Real-time financial opinion monitoring: Kafka → Faust → sentiment model → ClickHouse.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("demo")(demo.demo)
app.command("worker")(run.worker)
app.command("broker")(run.broker)
app.command("replay")(run.replay)
app.command("sql")(sql.sql)
app.command("report")(report.report)
app.command("chaos")(chaos.chaos)
app.add_typer(bench.bench_app, name="bench")
app.add_typer(model.model_app, name="model")
app.add_typer(alerts.alerts_app, name="alerts")


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=True)],
    )
    for noisy in ("aiokafka", "faust", "mode", "httpx", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    app()
