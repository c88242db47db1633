"""The demo run: the built-in feed through the embedded pipeline, and the summary of what happened."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta

from finpulse.feed import generate, to_message
from finpulse.harness import EmbeddedPipeline, Outbound, produce
from finpulse.settings import Settings
from finpulse.streams.produce import OutboundRecord

log = logging.getLogger("finpulse.demo")

TABLES = ("scored_events", "dlq_events", "retrain_samples", "opinion_index", "alerts")

LATENCY_SQL = """
SELECT
    count() AS events,
    quantileExact(0.50)(latency_ms) AS p50_ms,
    quantileExact(0.95)(latency_ms) AS p95_ms,
    quantileExact(0.99)(latency_ms) AS p99_ms,
    max(latency_ms) AS max_ms,
    (toUnixTimestamp64Milli(max(stored_at)) - toUnixTimestamp64Milli(min(ingested_at))) / 1000 AS span_s
FROM (
    SELECT stored_at, ingested_at,
           toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ingested_at) AS latency_ms
    FROM scored_events
    WHERE {where}
)
"""


@dataclass(frozen=True)
class RunSummary:
    scenario: str
    events_sent: int
    events_stored: int
    events_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    rows: dict[str, int]
    dlq: int
    labels: dict[str, int]
    top_tickers: list[tuple[str, int, float]]
    model_version: str
    batches: int
    alerts: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def feed_messages(
    scenario: str, events: int | None, seed: int, run_id: str, span: timedelta | None = None
) -> list[Outbound]:
    """The scenario's events with ids prefixed by the run, so that runs never collide on event ids."""
    messages = []
    for event in generate(scenario, events=events, seed=seed, span=span):
        topic, key, value = to_message(event.model_copy(update={"id": f"{run_id}-{event.id}"}))
        messages.append(Outbound(topic, OutboundRecord(key=key, value=value)))
    return messages


def _watch_stored(
    pipeline: EmbeddedPipeline, where: str, on_stored: Callable[[int], None], stop: threading.Event
) -> None:
    assert pipeline.worker is not None
    while not stop.wait(0.5):
        try:
            on_stored(int(pipeline.worker.scalar(f"SELECT count() AS n FROM scored_events WHERE {where}")))
        except Exception as error:  # the progress display must never break the run
            log.debug("progress poll failed: %s", error)


def run_feed(
    pipeline: EmbeddedPipeline,
    messages: list[Outbound],
    *,
    rate: float | None,
    timeout_s: float,
    where: str = "1",
    on_sent: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
) -> int:
    """Send the messages and wait until the worker stored them all; returns the stored count."""
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch_stored, args=(pipeline, where, on_stored or (lambda n: None), stop), daemon=True
    )
    watcher.start()
    try:
        asyncio.run(produce(pipeline.bootstrap_servers, pipeline.settings, messages, rate=rate, on_progress=on_sent))
        return pipeline.wait_for_rows("scored_events", len(messages), timeout_s=timeout_s, where=where)
    finally:
        stop.set()
        watcher.join()


def wait_for_index_to_settle(pipeline: EmbeddedPipeline, timeout_s: float = 20.0, quiet_s: float = 1.5) -> None:
    """The index and alert stages trail the stored events by one agent hop: wait until they stop changing.

    Quiet means no index update for ``quiet_s`` beyond one index flush (``FINPULSE_INDEX_FLUSH_S``), the
    longest the index waits to gather its input.
    """
    assert pipeline.worker is not None
    quiet_s += pipeline.settings.index_flush_s
    deadline = time.monotonic() + timeout_s
    last, quiet_since = None, time.monotonic()
    while time.monotonic() < deadline:
        latest = pipeline.worker.scalar("SELECT max(updated_at) AS t FROM opinion_index")
        if latest != last:
            last, quiet_since = latest, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.25)


def run_filter(run_id: str) -> str:
    """SQL condition for the events of one run: its ids (``source_id``) start with the run id."""
    return f"startsWith(source_id, '{run_id}-')"


def summarize(pipeline: EmbeddedPipeline, scenario: str, run_id: str, sent: int) -> RunSummary:
    worker = pipeline.worker
    assert worker is not None
    latency = worker.query(LATENCY_SQL.format(where=run_filter(run_id)))[0]
    rows = {table: int(worker.scalar(f"SELECT count() AS n FROM {table}")) for table in TABLES}
    labels = {
        r["label"]: int(r["n"]) for r in worker.query("SELECT label, count() AS n FROM scored_events GROUP BY label")
    }
    top = worker.query(
        "SELECT primary_ticker AS ticker, count() AS n, round(avg(score), 3) AS mean_score FROM scored_events "
        "WHERE primary_ticker != '' GROUP BY ticker ORDER BY n DESC LIMIT 5"
    )
    fired = worker.query(
        "SELECT rule, key, toString(window_start) AS window FROM v_alerts WHERE state = 'firing' ORDER BY fired_at"
    )
    health = worker.health()
    span_s = float(latency["span_s"]) or 1e-9
    return RunSummary(
        scenario=scenario,
        events_sent=sent,
        events_stored=int(latency["events"]),
        events_per_s=int(latency["events"]) / span_s,
        latency_p50_ms=float(latency["p50_ms"]),
        latency_p95_ms=float(latency["p95_ms"]),
        latency_p99_ms=float(latency["p99_ms"]),
        latency_max_ms=float(latency["max_ms"]),
        rows=rows,
        dlq=rows["dlq_events"],
        labels=labels,
        top_tickers=[(r["ticker"], int(r["n"]), float(r["mean_score"])) for r in top],
        model_version=str(health.get("model_version", "")),
        batches=int(health.get("totals", {}).get("batches", 0)),
        alerts=[f"{a['rule']} on {a['key']} ({a['window']})" for a in fired],
    )


def run_demo(
    settings: Settings,
    *,
    scenario: str,
    events: int | None,
    seed: int,
    rate: float | None,
    timeout_s: float = 600.0,
    on_sent: Callable[[int], None] | None = None,
    on_stored: Callable[[int], None] | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> RunSummary:
    run_id = f"run{time.strftime('%Y%m%dT%H%M%S')}"
    messages = feed_messages(scenario, events, seed, run_id)
    where = run_filter(run_id)
    with EmbeddedPipeline(settings) as pipeline:
        if on_ready:
            on_ready(len(messages))
        started = time.monotonic()
        stored = run_feed(
            pipeline,
            messages,
            rate=rate,
            timeout_s=timeout_s,
            where=where,
            on_sent=on_sent,
            on_stored=on_stored,
        )
        if stored < len(messages):
            raise TimeoutError(
                f"only {stored} of {len(messages)} events stored after {time.monotonic() - started:.0f}s"
            )
        wait_for_index_to_settle(pipeline)
        return summarize(pipeline, scenario, run_id, len(messages))
