"""The whole pipeline on real components: Tansu broker, Faust worker process, real model, chDB."""

from __future__ import annotations

import json

import pytest

from finpulse import identity
from finpulse.demo import feed_messages, run_feed, run_filter
from finpulse.harness import EmbeddedPipeline, Outbound
from finpulse.models import DEFAULT_MODEL_DIR
from finpulse.models.artifact import read_metadata
from finpulse.schemas import ScoredEvent
from finpulse.settings import Settings
from finpulse.streams import topics
from finpulse.streams.produce import OutboundRecord
from tests.integration.helpers import committed_offsets, raw_positions, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCORED_COLUMNS = (
    "event_id", "source_id", "kind", "source", "tickers", "text", "label", "p_bearish", "p_neutral", "p_bullish",
    "score", "confidence", "model_version", "event_time", "ingested_at", "scored_at", "stored_at",
)  # fmt: skip


def test_every_event_is_scored_stored_and_published_once(pipeline_settings: Settings) -> None:
    messages = feed_messages("steady", 600, seed=3, run_id="e2e")
    with EmbeddedPipeline(pipeline_settings) as pipeline:
        stored = run_feed(pipeline, messages, rate=None, timeout_s=180)
        assert stored == 600
        worker = pipeline.worker
        assert worker is not None
        counts = worker.query("SELECT count() AS n, uniqExact(event_id) AS u FROM scored_events")[0]
        assert (int(counts["n"]), int(counts["u"])) == (600, 600)
        empty = worker.query(
            "SELECT countIf(text = '') AS no_text, countIf(model_version = '') AS no_model,"
            " countIf(abs(p_bearish + p_neutral + p_bullish - 1) > 1e-3) AS bad_probs,"
            " countIf(abs(score - (p_bullish - p_bearish)) > 1e-5) AS bad_score,"
            " countIf(stored_at < scored_at OR scored_at < ingested_at) AS bad_times,"
            " countIf(label NOT IN ('bearish', 'neutral', 'bullish')) AS bad_label,"
            " countIf(length(tickers) = 0) AS no_tickers"
            " FROM scored_events"
        )[0]
        assert {k: int(v) for k, v in empty.items()} == {
            "no_text": 0, "no_model": 0, "bad_probs": 0, "bad_score": 0, "bad_times": 0, "bad_label": 0,
            "no_tickers": 0,
        }  # fmt: skip
        row = worker.query("SELECT * FROM scored_events LIMIT 1")[0]
        assert all(row[column] not in (None, "") for column in SCORED_COLUMNS)
        assert int(worker.scalar("SELECT count() AS n FROM dlq_events")) == 0
        # scored by the shipped default, the distilled int8 student, which names itself in every row
        versions = worker.query("SELECT DISTINCT model_version FROM scored_events")
        assert [v["model_version"] for v in versions] == [read_metadata(DEFAULT_MODEL_DIR).version]
        assert read_metadata(DEFAULT_MODEL_DIR).kind == "student"

    published = read_topic(pipeline.bootstrap_servers, pipeline_settings.topic(topics.EVENTS_SCORED), 600)
    events = [ScoredEvent.model_validate_json(record.value) for record in published]
    assert sorted(e.source_id for e in events) == sorted(m.record.key.decode() for m in messages)
    assert all(e.event_id == identity.event_id(e.kind, e.source, e.source_id) for e in events)
    keyed_by_ticker = [r for r, e in zip(published, events, strict=True) if r.key.decode() == e.tickers[0]]
    assert len(keyed_by_ticker) == len(published)


def _social(event_id: str, text: object, **extra: object) -> bytes:
    document = {
        "id": event_id,
        "platform": "x",
        "author": "a",
        "created_at": "2026-11-25T12:00:00Z",
        "text": text,
    }
    return json.dumps(document | extra).encode()


def test_malformed_input_goes_to_the_dlq_and_valid_events_around_it_are_scored(
    pipeline_settings: Settings,
) -> None:
    limit = pipeline_settings.max_message_bytes
    padding_for = lambda size: "x" * (size - len(_social("big", "")))  # noqa: E731
    bad = {
        "bad-json": b'{"id": "bad-json", "platform": ',
        "bad-utf8": b'{"id": "bad-utf8", "text": "\xff\xfe"}',
        "missing": json.dumps({"id": "missing", "platform": "x"}).encode(),
        "wrong-type": _social("wrong-type", 42),
        "empty": _social("empty", " \x00\x07 "),
        "too-big": _social("too-big", padding_for(limit + 1)),
    }
    good = {
        "good-1": _social("good-1", "$AAPL beats estimates, shares jump"),
        "good-ctrl": _social("good-ctrl", "Tesla\x00 recalls \x1b2M cars\tin the US"),
        "near-limit": _social("near-limit", "$MSFT " + padding_for(limit - 16)),
        "good-2": _social("good-2", "$NVDA guidance cut, stock slides"),
    }
    order = [
        "good-1",
        "bad-json",
        "bad-utf8",
        "good-ctrl",
        "missing",
        "wrong-type",
        "near-limit",
        "empty",
        "too-big",
        "good-2",
    ]
    raw = good | bad
    messages = [Outbound(topics.SOCIAL_RAW, OutboundRecord(key=k.encode(), value=raw[k])) for k in order]

    with EmbeddedPipeline(pipeline_settings) as pipeline:
        run_feed(pipeline, messages, rate=None, timeout_s=120)
        worker = pipeline.worker
        assert worker is not None
        assert pipeline.wait_for_rows("dlq_events", len(bad), timeout_s=60) == len(bad)
        scored = {r["source_id"]: r for r in worker.query("SELECT source_id, text, tickers FROM scored_events")}
        dlq = worker.query(
            "SELECT reason, error, source_topic, partition, offset, payload_sha256, payload_bytes FROM dlq_events"
        )

    assert set(scored) == set(good)
    assert scored["good-ctrl"]["text"] == "Tesla recalls 2M cars\tin the US"
    assert "TSLA" in scored["good-ctrl"]["tickers"]
    reasons = sorted(r["reason"] for r in dlq)
    assert reasons == sorted(
        ["invalid_json", "invalid_utf8", "invalid_event", "invalid_event", "empty_text", "too_large"]
    )
    assert all(
        r["source_topic"] == pipeline_settings.topic(topics.SOCIAL_RAW) and len(r["payload_sha256"]) == 64 for r in dlq
    )
    assert any("text" in r["error"] for r in dlq if r["reason"] == "invalid_event")

    dead = read_topic(pipeline.bootstrap_servers, pipeline_settings.topic(topics.EVENTS_DLQ), len(bad))
    assert len(dead) == len(bad)
    for record in dead:
        headers = dict(record.headers)
        assert headers["finpulse.reason"].decode() in reasons
        assert headers["finpulse.source_topic"].decode() == pipeline_settings.topic(topics.SOCIAL_RAW)
        assert int(headers["finpulse.source_offset"]) >= 0
        assert len(record.value) <= pipeline_settings.dlq_topic_max_bytes


def test_a_killed_worker_restarts_without_losing_or_duplicating_rows(pipeline_settings: Settings) -> None:
    total = 3000
    messages = feed_messages("steady", total, seed=5, run_id="crash")
    with EmbeddedPipeline(pipeline_settings) as pipeline:
        worker = pipeline.worker
        assert worker is not None
        import asyncio

        from finpulse.harness import produce

        asyncio.run(produce(pipeline.bootstrap_servers, pipeline_settings, messages, rate=None))
        # Kill it mid-stream: some batches stored, later ones not yet, offsets partly committed.
        stored_before = pipeline.wait_for_rows("scored_events", 400, timeout_s=120, poll_s=0.1)
        assert 0 < stored_before < total
        worker.kill()
        pipeline.worker = pipeline.start_worker()
        stored = pipeline.wait_for_rows("scored_events", total, timeout_s=240, where=run_filter("crash"))
        if stored < total:
            _explain_lost_events(pipeline, pipeline_settings, messages, stored)
        counts = pipeline.worker.query("SELECT count() AS n, uniqExact(event_id) AS u FROM scored_events")[0]
        assert (int(counts["n"]), int(counts["u"])) == (total, total)


def _explain_lost_events(pipeline: EmbeddedPipeline, settings: Settings, messages: list, stored: int) -> None:
    """Fail with where the lost events sat in the raw topics and what the group committed there."""
    assert pipeline.worker is not None
    query = f"SELECT source_id FROM scored_events WHERE {run_filter('crash')}"
    found = {r["source_id"] for r in pipeline.worker.query(query)}
    lost = {m.record.key.decode() for m in messages} - found
    raw_topics = [settings.topic(topics.NEWS_RAW), settings.topic(topics.SOCIAL_RAW)]
    positions = raw_positions(pipeline.bootstrap_servers, raw_topics, lost, len(messages))
    try:
        committed: object = committed_offsets(pipeline.bootstrap_servers, settings.worker_id, raw_topics)
    except Exception as error:  # noqa: BLE001 - a diagnostic must not hide the failure it explains
        committed = f"unavailable ({error!r})"
    pytest.fail(
        f"{len(messages) - stored} events lost; raw (topic, partition, offset): {positions}; committed: {committed}"
    )
