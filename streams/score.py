"""Scoring a micro-batch with one model call, and the rows and messages that come out of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from finpulse.models import BatchScorer, Scores
from finpulse.schemas import TextEvent
from finpulse.streams.produce import OutboundRecord
from finpulse.streams.validate import Rejected

Columns = dict[str, list[object]]


@dataclass(frozen=True)
class ScoredBatch:
    """The events of one micro-batch with their scores, in columnar form."""

    events: Sequence[TextEvent]
    scores: Scores
    model_version: str
    scored_at: datetime

    @property
    def score(self) -> np.ndarray:
        return self.scores.p_bullish - self.scores.p_bearish

    def low_confidence(self, threshold: float) -> np.ndarray:
        """Indexes of events the model was unsure about (calibrated confidence below the threshold)."""
        return np.flatnonzero(self.scores.confidence < threshold)


def score_events(scorer: BatchScorer, events: Sequence[TextEvent]) -> ScoredBatch:
    scores = scorer.score([event.text for event in events])
    return ScoredBatch(events=events, scores=scores, model_version=scorer.version, scored_at=datetime.now(UTC))


def scored_event_columns(batch: ScoredBatch, stored_at: datetime) -> Columns:
    events, scores = batch.events, batch.scores
    n = len(events)
    return {
        "event_id": [e.event_id for e in events],
        "source_id": [e.source_id for e in events],
        "kind": [e.kind for e in events],
        "source": [e.source for e in events],
        "tickers": [e.tickers for e in events],
        "primary_ticker": [e.tickers[0] if e.tickers else "" for e in events],
        "text": [e.text for e in events],
        "label": list(scores.labels),
        "p_bearish": scores.p_bearish.tolist(),
        "p_neutral": scores.p_neutral.tolist(),
        "p_bullish": scores.p_bullish.tolist(),
        "score": batch.score.tolist(),
        "confidence": scores.confidence.tolist(),
        "model_version": [batch.model_version] * n,
        "event_time": [e.event_time for e in events],
        "ingested_at": [e.ingested_at for e in events],
        "scored_at": [batch.scored_at] * n,
        "stored_at": [stored_at] * n,
        "source_topic": [e.source_topic for e in events],
        "partition": [e.partition for e in events],
        "offset": [e.offset for e in events],
    }


def retrain_columns(batch: ScoredBatch, threshold: float, flagged_at: datetime) -> Columns:
    picked = batch.low_confidence(threshold)
    scores = batch.scores
    return {
        "event_id": [batch.events[i].event_id for i in picked],
        "source_id": [batch.events[i].source_id for i in picked],
        "text": [batch.events[i].text for i in picked],
        "p_bearish": scores.p_bearish[picked].tolist(),
        "p_neutral": scores.p_neutral[picked].tolist(),
        "p_bullish": scores.p_bullish[picked].tolist(),
        "label": [scores.labels[i] for i in picked],
        "confidence": scores.confidence[picked].tolist(),
        "reason": [f"low_confidence<{threshold:g}"] * len(picked),
        "model_version": [batch.model_version] * len(picked),
        "flagged_at": [flagged_at] * len(picked),
    }


def dlq_columns(rejected: Sequence[Rejected], head_bytes: int, received_at: datetime) -> Columns:
    return {
        "dlq_id": [r.dlq_id for r in rejected],
        "reason": [r.reason for r in rejected],
        "error": [r.error for r in rejected],
        "source_topic": [r.message.topic for r in rejected],
        "partition": [r.message.partition for r in rejected],
        "offset": [r.message.offset for r in rejected],
        "payload_sha256": [r.payload_sha256 for r in rejected],
        "payload_head": [r.message.value[:head_bytes].decode("utf-8", "replace") for r in rejected],
        "payload_bytes": [len(r.message.value) for r in rejected],
        "received_at": [received_at] * len(rejected),
    }


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def column_records(columns: Columns, drop: Sequence[str] = ()) -> list[dict[str, object]]:
    """Columns back to JSON-ready records (datetimes as ISO 8601), for publishing."""
    names = [name for name in columns if name not in drop]
    return [
        {name: _iso(value) for name, value in zip(names, row, strict=True)}
        for row in zip(*(columns[name] for name in names), strict=True)
    ]


_PROVENANCE = ("primary_ticker", "stored_at", "source_topic", "partition", "offset")


def scored_messages(columns: Columns) -> list[OutboundRecord]:
    """``events.scored``: one JSON ``ScoredEvent`` per event, keyed by primary ticker (event id if none)."""
    records = column_records(columns, drop=_PROVENANCE)
    return [
        OutboundRecord(
            key=(ticker or event_id).encode(),
            value=json.dumps(record, ensure_ascii=False).encode(),
        )
        for record, ticker, event_id in zip(records, columns["primary_ticker"], columns["event_id"], strict=True)
    ]


def retrain_messages(columns: Columns) -> list[OutboundRecord]:
    return [
        OutboundRecord(key=str(record["event_id"]).encode(), value=json.dumps(record, ensure_ascii=False).encode())
        for record in column_records(columns)
    ]


def dlq_messages(rejected: Sequence[Rejected], max_payload_bytes: int) -> list[OutboundRecord]:
    """``events.dlq``: the original bytes (bounded) with the reason and origin in headers."""
    return [
        OutboundRecord(
            key=r.message.key,
            value=r.message.value[:max_payload_bytes],
            headers=[
                ("finpulse.reason", r.reason.encode()),
                ("finpulse.error", r.error.encode()[:1024]),
                ("finpulse.source_topic", r.message.topic.encode()),
                ("finpulse.source_partition", str(r.message.partition).encode()),
                ("finpulse.source_offset", str(r.message.offset).encode()),
                ("finpulse.payload_sha256", r.payload_sha256.encode()),
                ("finpulse.payload_bytes", str(len(r.message.value)).encode()),
            ],
        )
        for r in rejected
    ]
