"""Running a worker process, and finding the one that holds this data directory."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import faust

from finpulse.rules import load_rules_for
from finpulse.settings import Settings
from finpulse.streams.app import create_app
from finpulse.streams.broker import EmbeddedBroker
from finpulse.streams.topics import ensure_topics
from finpulse.streams.web import check_exposure

log = logging.getLogger("finpulse.worker")


@dataclass(frozen=True)
class RunningWorker:
    pid: int
    url: str
    clickhouse_dsn: str
    bootstrap_servers: str


def _registry_path(settings: Settings) -> Path:
    return settings.data_dir / "worker.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_worker(settings: Settings) -> RunningWorker | None:
    """The live worker that holds this data directory's ClickHouse, if there is one."""
    path = _registry_path(settings)
    try:
        entry = RunningWorker(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if entry.clickhouse_dsn != settings.resolved_clickhouse_dsn or not _alive(entry.pid):
        return None
    return entry


def _register(settings: Settings, bootstrap_servers: str) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    host = settings.worker_web_host
    entry = {
        "pid": os.getpid(),
        "url": f"http://{host}:{settings.worker_web_port}",
        "clickhouse_dsn": settings.resolved_clickhouse_dsn,
        "bootstrap_servers": bootstrap_servers,
    }
    _registry_path(settings).write_text(json.dumps(entry))


def _unregister(settings: Settings) -> None:
    path = _registry_path(settings)
    entry = running_worker(settings)
    if entry is None or entry.pid == os.getpid():
        path.unlink(missing_ok=True)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT; starts the embedded broker first when no broker is configured.

    Raises ``RulesError`` before anything starts when the alert rules file is invalid, and
    ``ExposedEndpointError`` when the HTTP endpoint would serve SQL beyond loopback without a token.
    """
    load_rules_for(settings)
    check_exposure(settings)
    with ExitStack() as stack:
        if settings.embedded_broker:
            log_file = settings.data_dir / "broker.log"
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            broker = stack.enter_context(EmbeddedBroker(log_file=log_file, storage=settings.broker_storage))
            bootstrap = broker.bootstrap_servers
            log.info("no FINPULSE_BROKER set: started the embedded broker on %s", bootstrap)
        else:
            bootstrap = settings.broker
        asyncio.run(ensure_topics(settings, bootstrap))
        app, _ = create_app(settings, bootstrap)
        _register(settings, bootstrap)
        stack.callback(_unregister, settings)
        worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, loop=asyncio.new_event_loop())
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
