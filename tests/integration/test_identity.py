"""Event identity through the real pipeline: feeds that share ids store every event, duplicates are counted,
and a batch redelivered across the upgrade to namespaced ids (migration 0005) gets no second row."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from finpulse.entities import EntityLinker
from finpulse.harness import EmbeddedPipeline, Outbound, WorkerProcess, produce
from finpulse.identity import event_id
from finpulse.models import DEFAULT_MODEL_DIR, BatchScorer
from finpulse.settings import Settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.writer import ClickHouseWriter
from finpulse.streams import topics
from finpulse.streams.produce import OutboundRecord
from finpulse.streams.score import score_events, scored_event_columns
from finpulse.streams.validate import EventParser, RawMessage

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_IDS = [f"same-{i:03d}" for i in range(50)]


def news(raw_id: str, outlet: str) -> Outbound:
    document = {"id": raw_id, "source": outlet, "published_at": "2026-11-25T12:00:00Z",
                "headline": f"$AAPL beats estimates as iPhone sales climb ({outlet} {raw_id})"}  # fmt: skip
    return Outbound(topics.NEWS_RAW, OutboundRecord(key=raw_id.encode(), value=json.dumps(document).encode()))


def post(raw_id: str, platform: str) -> Outbound:
    document = {"id": raw_id, "platform": platform, "created_at": "2026-11-25T12:00:00Z",
                "text": f"$NVDA guidance cut, stock slides ({platform} {raw_id})"}  # fmt: skip
    return Outbound(topics.SOCIAL_RAW, OutboundRecord(key=raw_id.encode(), value=json.dumps(document).encode()))


def three_feeds() -> list[Outbound]:
    """The same 50 ids from reuters and bloomberg on news.raw, and from x on social.raw."""
    return [message for raw in SHARED_IDS for message in (news(raw, "reuters"), news(raw, "bloomberg"), post(raw, "x"))]


def send(pipeline: EmbeddedPipeline, messages: list[Outbound]) -> None:
    asyncio.run(produce(pipeline.bootstrap_servers, pipeline.settings, messages, rate=None))


def wait_until_consumed(worker: WorkerProcess, expected: int, timeout_s: float = 180.0) -> dict[str, int]:
    """The worker's totals once it has processed ``expected`` messages (or the last seen at the deadline)."""
    deadline = time.monotonic() + timeout_s
    totals: dict[str, int] = {}
    while time.monotonic() < deadline:
        totals = worker.health().get("totals", {})
        if totals.get("consumed", 0) >= expected:
            break
        time.sleep(0.25)
    return totals


def counts(worker: WorkerProcess) -> tuple[int, int]:
    row = worker.query("SELECT count() AS n, uniqExact(event_id) AS u FROM scored_events")[0]
    return int(row["n"]), int(row["u"])


def test_the_same_ids_from_three_feeds_are_three_events_and_a_resent_feed_is_counted(
    pipeline_settings: Settings,
) -> None:
    with EmbeddedPipeline(pipeline_settings) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        send(pipeline, three_feeds())
        assert pipeline.wait_for_rows("scored_events", 150, timeout_s=180) == 150
        assert counts(worker) == (150, 150)
        stored = worker.query("SELECT kind, source, count() AS n, uniqExact(source_id) AS ids FROM scored_events "
                              "GROUP BY kind, source ORDER BY kind, source")  # fmt: skip
        assert [(r["kind"], r["source"], int(r["n"]), int(r["ids"])) for r in stored] == [
            ("news", "bloomberg", 50, 50), ("news", "reuters", 50, 50), ("social", "x", 50, 50),
        ]  # fmt: skip
        sample = worker.query("SELECT event_id, source_id FROM scored_events WHERE source = 'bloomberg' LIMIT 1")[0]
        assert sample["event_id"] == event_id("news", "bloomberg", sample["source_id"])
        assert wait_until_consumed(worker, 150).get("duplicates", 0) == 0

        # The feeds send everything again: nothing more is stored, and every resent event is counted.
        send(pipeline, three_feeds())
        totals = wait_until_consumed(worker, 300)
        assert totals["consumed"] == 300 and totals["duplicates"] == 150
        assert counts(worker) == (150, 150)
    log = (pipeline_settings.data_dir / "worker.log").read_text(errors="replace")
    logged = [line for line in log.splitlines() if "were duplicates, not stored again" in line]
    assert logged and sum(int(line.split(": ", 1)[1].split(" of ")[0]) for line in logged) == 150


def test_a_batch_redelivered_across_the_upgrade_gets_no_second_row(pipeline_settings: Settings) -> None:
    messages = three_feeds()[:60]  # 20 ids, each from reuters, bloomberg and x
    first_of_each_id = [m for i, m in enumerate(messages) if i % 3 == 0]  # before: one row per raw id
    store_as_before_0005(pipeline_settings, first_of_each_id)

    with EmbeddedPipeline(pipeline_settings) as pipeline:  # the worker migrates at start-up
        worker = pipeline.worker
        assert worker is not None
        assert worker.query("SELECT version FROM schema_migrations WHERE version = '0005'")
        assert counts(worker) == (20, 20)
        send(pipeline, messages)  # the old batch redelivered, plus the events the old ids had merged
        totals = wait_until_consumed(worker, len(messages))
        assert totals["duplicates"] == 20
        assert counts(worker) == (60, 60)
        upgraded = worker.query("SELECT event_id, source_id, kind, source FROM scored_events")
    assert all(r["event_id"] == event_id(r["kind"], r["source"], r["source_id"]) for r in upgraded)


def store_as_before_0005(settings: Settings, messages: list[Outbound]) -> None:
    """The rows the pipeline stored for these messages before 0005 (event_id = the raw id), in the
    schema of 0004, in the data directory the worker will open."""
    client = get_client(settings.resolved_clickhouse_dsn)
    try:
        migrate(client, target="0004")
        raw = [
            RawMessage(settings.topic(m.topic), 0, offset, int(datetime.now(UTC).timestamp() * 1000), m.record.key,
                       m.record.value)
            for offset, m in enumerate(messages)
        ]  # fmt: skip
        parsed = EventParser(settings, EntityLinker.default()).parse(raw)
        columns = scored_event_columns(score_events(BatchScorer.load(DEFAULT_MODEL_DIR), parsed.events),
                                       stored_at=datetime.now(UTC))  # fmt: skip
        columns["event_id"] = columns.pop("source_id")
        result = ClickHouseWriter(client, retry_max_s=5).write("scored_events", columns, key="event_id",
                                                                dedup_token="before-0005")  # fmt: skip
        assert result.inserted == len(messages)
    finally:
        client.close()
