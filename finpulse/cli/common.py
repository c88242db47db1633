"""What several commands need: the broker to talk to."""

from __future__ import annotations

import typer

from finpulse.cli.console import err
from finpulse.settings import Settings


def bootstrap_servers(settings: Settings) -> str:
    """FINPULSE_BROKER, else the broker of the worker running on this data directory; exits 2 without one."""
    from finpulse.streams.worker import running_worker

    if settings.broker:
        return settings.broker
    running = running_worker(settings)
    if running is None:
        err.print(
            "[red]No broker:[/] set FINPULSE_BROKER, or start `finpulse worker` (it runs an embedded broker "
            "and registers it in FINPULSE_DATA_DIR), or `finpulse broker`."
        )
        raise typer.Exit(2)
    return running.bootstrap_servers
