"""``finpulse chaos``: each fault against the real embedded stack, and what became of every event."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from finpulse.cli.console import err
from finpulse.settings import get_settings


def chaos(
    scenario: Annotated[
        list[str] | None, typer.Option("--scenario", "-s", help="Run only this scenario (repeatable).")
    ] = None,
    small: Annotated[bool, typer.Option("--small", help="The test-suite sizes instead of the full ones.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Kill, starve and poison the pipeline; exit 1 if any event was lost or stored twice, or a check failed."""
    from finpulse.chaos.result import ScenarioSize
    from finpulse.chaos.runner import available_scenarios, run_scenarios

    size = ScenarioSize.small() if small else ScenarioSize.full()
    names = scenario or available_scenarios()
    with err.status(f"chaos: {', '.join(names)}") as status:
        results = run_scenarios(
            names, size, get_settings(), on_result=lambda r: status.update(f"chaos: {r.scenario} done")
        )
    table = Table(title=f"finpulse chaos — {'small' if small else 'full'} sizes")
    for column in ("scenario", "sent", "stored", "duplicated", "in DLQ", "lost", "time to recover", "ok"):
        left = column in ("scenario", "ok")
        table.add_column(column, justify="left" if left else "right", no_wrap=column != "ok")
    for r in results:
        table.add_row(
            r.scenario,
            f"{r.sent:,}",
            f"{r.stored:,}",
            f"{r.duplicated:,}",
            f"{r.dlq:,}",
            f"{r.lost:,}",
            "—" if r.recover_s is None else f"{r.recover_s:.1f} s",
            "[green]ok[/]" if r.ok else f"[red]FAILED[/] {'; '.join(r.failed_checks)}",
        )
    err.print(table)
    if json_output:
        print(json.dumps({"size": size.__dict__, "results": [r.as_dict() for r in results]}, default=str))
    if not all(r.ok for r in results):
        raise typer.Exit(1)
