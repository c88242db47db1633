"""Opinion indexes on real components: Tansu broker, Faust worker process, real model, chDB.

The streamed index (Faust table → ``opinion_index``) and the SQL index (materialized views over
``scored_events`` → ``opinion_index_sql``) must agree on every closed window, across a worker that is
killed and restarted mid-stream (its table comes back from the changelog), and a late event must be
reported as late by the stream and counted by SQL.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import faust
import pytest
from clickhouse_connect.driver import Client

from finpulse.harness import EmbeddedPipeline, Outbound, WorkerProcess, produce
from finpulse.schemas import OpinionIndex
from finpulse.settings import Settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.writer import ClickHouseWriter
from finpulse.streams import topics
from finpulse.streams.app import WorkerState
from finpulse.streams.index_agent import IndexStage
from finpulse.streams.indexes import KeyPartial, to_ms, window_start_ms
from finpulse.streams.produce import OutboundRecord, new_producer
from finpulse.streams.topics import ensure_topics
from tests.integration.helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SPACING_S = 10
EVENTS = 240  # 40 minutes of event time: 40 one-minute windows, 8 five-minute windows
LATENESS_S = 60
TICKERS = ("AAPL", "MSFT", "0700.HK", "TSLA", "BABA")
OUTLETS = ("reuters", "bloomberg")
PLATFORMS = ("x", "stocktwits")
PHRASES = (
    "{c} beats estimates and raises guidance, shares jump",
    "{c} misses on revenue, stock slides after hours",
    "{c} holds its annual meeting on Thursday",
    "downgrade: {c} cut to sell on weak demand",
    "{c} wins a large contract, analysts bullish",
    "{c} faces a probe over accounting, shares tumble",
)
LATE_AT = T0 + timedelta(minutes=5, seconds=10)
COLUMNS = (
    "scope, key, window_s, toUnixTimestamp64Milli(window_start) AS start_ms, buzz, mean_score, net_sentiment, "
    "bullish_share, neutral_share, bearish_share, dispersion, buzz_z, sentiment_z, baseline_windows, late_events"
)
FIGURES = ("mean_score", "net_sentiment", "bullish_share", "neutral_share", "bearish_share", "dispersion")


def event(index: int, at: datetime) -> Outbound:
    ticker = TICKERS[index % len(TICKERS)]
    text = PHRASES[(index * 7) % len(PHRASES)].format(c=f"${ticker}")
    if index % 9 == 0:
        text += f" — ${TICKERS[(index + 1) % len(TICKERS)]} moves too"
    event_id = f"idx-{index:04d}"
    if index % 4 == 0:
        document = {"id": event_id, "source": OUTLETS[index % 2], "published_at": at.isoformat(), "headline": text}
        topic = topics.NEWS_RAW
    else:
        document = {"id": event_id, "platform": PLATFORMS[index % 2], "created_at": at.isoformat(), "text": text}
        topic = topics.SOCIAL_RAW
    return Outbound(topic, OutboundRecord(key=event_id.encode(), value=json.dumps(document).encode()))


def send(pipeline: EmbeddedPipeline, messages: list[Outbound]) -> None:
    asyncio.run(produce(pipeline.bootstrap_servers, pipeline.settings, messages, rate=None))


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def closed_minutes(worker: WorkerProcess) -> int:
    return int(
        worker.scalar(
            "SELECT count() AS n FROM opinion_index_final "
            "WHERE scope = 'market' AND key = 'all' AND window_s = 60 AND closed"
        )
    )


def expected_closed_minutes(last_event: datetime) -> int:
    watermark_s = (last_event - T0).total_seconds() - LATENESS_S
    return math.floor(watermark_s / 60)  # minutes [0, 60·k) end at or before the watermark


def rows(worker: WorkerProcess, source: str) -> dict[tuple, dict]:
    found = worker.query(f"SELECT {COLUMNS} FROM {source} WHERE closed")
    return {(r["scope"], r["key"], int(r["window_s"]), int(r["start_ms"])): r for r in found}


def test_streamed_and_sql_indexes_agree_on_closed_windows_across_a_restart(pipeline_settings: Settings) -> None:
    times = [T0 + timedelta(seconds=SPACING_S * i) for i in range(EVENTS)]
    messages = [event(i, at) for i, at in enumerate(times)]
    half = EVENTS // 2
    with EmbeddedPipeline(pipeline_settings) as pipeline:
        assert pipeline.worker is not None
        send(pipeline, messages[:half])
        assert pipeline.wait_for_rows("scored_events", half, timeout_s=180) == half
        first_worker = pipeline.worker
        first_half_closed = expected_closed_minutes(times[half - 1])
        wait_until("the first half's windows to close", lambda: closed_minutes(first_worker) == first_half_closed)

        # a crash: the new worker gets the table back from its changelog; what the old one had not
        # committed comes back and is recognised as applied (a SIGTERM'd worker would do too, but on the
        # embedded broker its successor waits about a minute longer to be given the partitions)
        pipeline.worker.kill()
        pipeline.worker = pipeline.start_worker()
        worker = pipeline.worker
        send(pipeline, messages[half:])
        assert pipeline.wait_for_rows("scored_events", EVENTS, timeout_s=180) == EVENTS
        wait_until("every window to close", lambda: closed_minutes(worker) == expected_closed_minutes(times[-1]))

        late = Outbound(topics.SOCIAL_RAW, OutboundRecord(
            key=b"idx-late",
            value=json.dumps({"id": "idx-late", "platform": "x", "created_at": LATE_AT.isoformat(),
                              "text": "$AAPL crashing, dumping everything"}).encode(),
        ))  # fmt: skip
        send(pipeline, [late])
        assert pipeline.wait_for_rows("scored_events", EVENTS + 1, timeout_s=60) == EVENTS + 1
        late_start_ms = window_start_ms(to_ms(LATE_AT), 60)
        wait_until("the late event to be reported", lambda: int(worker.scalar(
            "SELECT late_events AS n FROM opinion_index_final WHERE scope = 'market' AND key = 'all' "
            f"AND window_s = 60 AND toUnixTimestamp64Milli(window_start) = {late_start_ms}"
        )) == 1)  # fmt: skip

        # Keys live on different partitions of the partials topic, each closing its windows as its own
        # watermark passes: wait until every key has caught up before comparing the two sides.
        wait_until(
            "every key's windows to close",
            lambda: set(rows(worker, "opinion_index_final")) == set(rows(worker, "opinion_index_sql")),
        )
        stream = rows(worker, "opinion_index_final")
        sql = rows(worker, "opinion_index_sql")
        stored_late = worker.query("SELECT tickers FROM scored_events WHERE source_id = 'idx-late'")
        versions = int(worker.scalar("SELECT count() AS n FROM opinion_index"))
        distinct_ids = int(worker.scalar("SELECT uniqExact(index_id) AS n FROM opinion_index"))

    assert stored_late and "AAPL" in stored_late[0]["tickers"], "the late event is stored, not lost"
    assert versions == distinct_ids, "no version of a window record is written twice"
    assert set(stream) == set(sql), "both sides close the same windows of the same keys"
    assert {scope for scope, *_ in stream} == {"ticker", "source", "market"}
    late_keys = {("ticker", "AAPL"), ("market", "US"), ("market", "all"), ("source", "social"), ("source", "social:x")}

    compared_z = 0
    for ref, s in stream.items():
        q = sql[ref]
        scope, key, window_s, start_ms = ref
        late_window = (scope, key) in late_keys and start_ms == window_start_ms(to_ms(LATE_AT), window_s)
        assert int(s["buzz"]) + int(s["late_events"]) == int(q["buzz"]), ref
        assert int(s["late_events"]) == (1 if late_window and window_s in (60, 300) else 0), ref
        if int(s["late_events"]):
            continue  # SQL counts the late event in the window's figures; the stream reports it apart
        for name in FIGURES:
            assert float(s[name]) == pytest.approx(float(q[name]), abs=1e-7), (ref, name)
        if (scope, key) in late_keys and window_s in (60, 300) and start_ms > to_ms(LATE_AT):
            continue  # later baselines hold the late window, whose SQL buzz includes the late event
        assert int(s["baseline_windows"]) == int(q["baseline_windows"]), ref
        for name in ("buzz_z", "sentiment_z"):
            if q[name] is None:
                assert s[name] is None, (ref, name)
            else:
                assert float(s[name]) == pytest.approx(float(q[name]), rel=1e-6, abs=1e-5), (ref, name)
                compared_z += 1
    assert compared_z > 100

    published = read_topic(pipeline.bootstrap_servers, pipeline_settings.topic(topics.INDEXES), versions)
    updates = [OpinionIndex.model_validate_json(record.value) for record in published]
    assert {(u.scope, u.key) for u in updates if u.closed} >= {(scope, key) for scope, key, *_ in stream}
    assert all(record.key.decode() == f"{u.scope}:{u.key}" for record, u in zip(published, updates, strict=True))


def scored_rows(ids: list[str], stored_at: datetime) -> dict[str, list[object]]:
    n = len(ids)
    return {
        "event_id": ids,
        "kind": ["social"] * n,
        "source": ["x"] * n,
        "tickers": [["AAPL"]] * n,
        "text": [f"$AAPL post {event_id}" for event_id in ids],
        "label": ["bullish"] * n,
        "p_bearish": [0.1] * n,
        "p_neutral": [0.2] * n,
        "p_bullish": [0.7] * n,
        "score": [0.6] * n,
        "confidence": [0.7] * n,
        "model_version": ["test"] * n,
        "event_time": [T0 + timedelta(seconds=i) for i in range(n)],
        "ingested_at": [stored_at] * n,
        "scored_at": [stored_at] * n,
        "stored_at": [stored_at] * n,
        "source_topic": ["t.social.raw"] * n,
        "partition": [0] * n,
        "offset": list(range(n)),
    }


async def _replay_a_batch(settings: Settings, client: Client) -> None:
    await ensure_topics(settings, settings.broker)
    state = WorkerState(settings, settings.broker)
    state.producer = new_producer(settings.broker)
    await state.producer.start()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.broker}",
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # Faust's default is ./<id>-data, in the repository root
    )
    stage = IndexStage(app, state, None)
    writer = ClickHouseWriter(client, retry_max_s=30)
    try:
        ids = [f"replay-{i}" for i in range(6)]
        first = scored_rows(ids[:4], datetime.now(UTC))
        stored = writer.write("scored_events", first, key="event_id", dedup_token="replay/0-3")
        await stage.on_scored(first, stored)
        # redelivered with two more events: the first four are stored already
        again = scored_rows(ids, datetime.now(UTC) + timedelta(milliseconds=5))
        stored = writer.write("scored_events", again, key="event_id", dedup_token="replay/0-5")
        assert stored.inserted == 2
        await stage.on_scored(again, stored)
        # the feed sends replay-2 a second time, as a new message at offset 6, beside a new event
        later = scored_rows(["replay-2", "replay-6"], datetime.now(UTC) + timedelta(milliseconds=10))
        later["offset"] = [6, 7]
        stored = writer.write("scored_events", later, key="event_id", dedup_token="replay/6-7")
        assert (stored.inserted, stored.existing) == (1, frozenset({"replay-2"}))
        await stage.on_scored(later, stored)
    finally:
        stage.close()
        await state.producer.stop()


def test_a_replayed_batch_flags_the_events_an_earlier_attempt_stored_and_a_repeat_is_not_counted_again(
    pipeline_settings: Settings, tmp_path
) -> None:
    settings = pipeline_settings.model_copy(update={"clickhouse_dsn": f"chdb://{tmp_path / 'clickhouse'}"})
    client = get_client(settings.clickhouse_dsn)
    try:
        migrate(client)
        asyncio.run(_replay_a_batch(settings, client))
    finally:
        client.close()  # chDB holds one data directory per process at a time
    # three batches, each: partials of 5 keys, one tick per partition
    records = read_topic(settings.broker, settings.topic(topics.INDEX_PARTIALS), 3 * (5 + settings.topic_partitions))

    partials = [r for r in records if r.key.startswith(b"market:all")]
    assert len(partials) == 3
    first, again, later = (
        KeyPartial.from_document(json.loads(r.value)) for r in sorted(partials, key=lambda r: r.offset)
    )
    assert [w.n for w in first.windows if w.window_s == 60] == [4]
    assert [w.n for w in again.windows if w.window_s == 60] == [2]
    assert sorted(r.event_id for r in again.replayed) == [f"replay-{i}" for i in range(4)]
    # scored_events holds replay-2 once: the index counts it once too, and only replay-6 is new
    assert [w.n for w in later.windows if w.window_s == 60] == [1]
    assert later.replayed == []
    for partition in range(settings.topic_partitions):  # each batch: its partials, then its tick
        in_order = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
        kinds = "".join("T" if b'"tick"' in r.value else "P" for r in in_order)
        assert re.fullmatch(r"(P*T){3}", kinds), (partition, kinds)
