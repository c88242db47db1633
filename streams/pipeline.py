"""One micro-batch through the pipeline: validate → score → store → publish.

Offsets of a batch are committed by the caller only after ``process`` returned, that is after every row
is in ClickHouse; the writer skips events already stored, so a redelivered batch writes nothing twice.
Events dropped that way are counted (``totals["duplicates"]``) and logged once per batch: a redelivery
after a restart explains them, and a feed that sends an event twice shows up instead of vanishing.

The side tables (``retrain_samples``, ``dlq_events``) are written beside ``scored_events``, by a writer on a
client of its own: a batch with rejected messages pays for its DLQ insert in parallel, not in series.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from finpulse.models import BatchScorer
from finpulse.settings import Settings
from finpulse.sinks.writer import ClickHouseWriter, WriteResult
from finpulse.streams import topics
from finpulse.streams.produce import publish_batch
from finpulse.streams.score import (
    Columns,
    dlq_columns,
    dlq_messages,
    retrain_columns,
    retrain_messages,
    score_events,
    scored_event_columns,
    scored_messages,
)
from finpulse.streams.validate import EventParser, RawMessage

log = logging.getLogger("finpulse.pipeline")

# Awaited with every stored batch (``scored_event_columns`` layout) and what the writer did with it, before
# the batch's offsets are committed: the index stage and the alert engine's event rules.
OnStored = Callable[[Columns, WriteResult], Awaitable[object]]


@dataclass(frozen=True)
class BatchReport:
    consumed: int
    scored: int
    stored: int
    rejected: int
    flagged: int
    duplicates: int
    seconds: float


def batch_token(messages: Sequence[RawMessage]) -> str:
    """Names a batch by its offset ranges, e.g. ``finpulse.news.raw:0:100-199,...``; stable across retries."""
    ranges: dict[tuple[str, int], list[int]] = defaultdict(list)
    for message in messages:
        ranges[(message.topic, message.partition)].append(message.offset)
    return ",".join(
        f"{topic}:{partition}:{min(offsets)}-{max(offsets)}" for (topic, partition), offsets in sorted(ranges.items())
    )


class ScoringPipeline:
    """Holds the per-process resources (parser, scorer, writer, producer) and runs batches through them."""

    def __init__(
        self,
        settings: Settings,
        parser: EventParser,
        scorer: BatchScorer,
        writer: ClickHouseWriter,
        producer: AIOKafkaProducer,
        on_stored: Sequence[OnStored] = (),
        side_writer: ClickHouseWriter | None = None,
    ) -> None:
        self._settings = settings
        self._on_stored = tuple(on_stored)
        self._parser = parser
        self._scorer = scorer
        self._writer = writer
        # Writes retrain_samples and dlq_events while ``writer`` writes scored_events: on a client of its
        # own the two inserts run in parallel (chDB and the server both take concurrent clients).
        self._side_writer = side_writer or writer
        self._producer = producer
        self.totals: dict[str, int] = defaultdict(int)

    async def process(self, messages: Sequence[RawMessage]) -> BatchReport:
        started = time.perf_counter()
        settings = self._settings
        parsed = self._parser.parse(messages)
        parsed_at = time.perf_counter()
        scored = await asyncio.to_thread(score_events, self._scorer, parsed.events)
        scored_at = time.perf_counter()
        now = datetime.now(UTC)
        scored_rows = scored_event_columns(scored, stored_at=now)
        retrain_rows = retrain_columns(scored, settings.retrain_confidence_threshold, flagged_at=now)
        dlq_rows = dlq_columns(parsed.rejected, settings.dlq_payload_head_bytes, received_at=now)

        token = batch_token(messages)
        stored, _ = await asyncio.gather(
            asyncio.to_thread(self._store_scored, token, scored_rows),
            asyncio.to_thread(self._store_side, token, retrain_rows, dlq_rows),
        )
        if stored.duplicates:
            log.info(
                "batch %s: %d of %d events were duplicates, not stored again (%d stored before, %d twice in "
                "the batch)",
                token, stored.duplicates, len(parsed.events), stored.skipped_existing, stored.skipped_in_batch,
            )  # fmt: skip
        for hook in self._on_stored:
            await hook(scored_rows, stored)
        stored_at = time.perf_counter()

        await asyncio.gather(
            publish_batch(self._producer, settings.topic(topics.EVENTS_SCORED), scored_messages(scored_rows)),
            publish_batch(self._producer, settings.topic(topics.RETRAIN_SAMPLES), retrain_messages(retrain_rows)),
            publish_batch(
                self._producer,
                settings.topic(topics.EVENTS_DLQ),
                dlq_messages(parsed.rejected, settings.dlq_topic_max_bytes),
            ),
        )
        log.info(
            "batch of %d: parse %.3fs, score %.3fs, store %.3fs, publish %.3fs",
            len(messages), parsed_at - started, scored_at - parsed_at, stored_at - scored_at,
            time.perf_counter() - stored_at,
        )  # fmt: skip
        report = BatchReport(
            consumed=len(messages),
            scored=len(parsed.events),
            stored=stored.inserted,
            rejected=len(parsed.rejected),
            flagged=len(retrain_rows["event_id"]),
            duplicates=stored.duplicates,
            seconds=time.perf_counter() - started,
        )
        self._count(report)
        return report

    def _store_scored(self, token: str, scored_rows: Columns) -> WriteResult:
        return self._writer.write("scored_events", scored_rows, key="event_id", dedup_token=f"scored/{token}")

    def _store_side(self, token: str, retrain_rows: Columns, dlq_rows: Columns) -> None:
        self._side_writer.write("retrain_samples", retrain_rows, key="event_id", dedup_token=f"retrain/{token}")
        self._side_writer.write("dlq_events", dlq_rows, key="dlq_id", dedup_token=f"dlq/{token}")

    def _count(self, report: BatchReport) -> None:
        self.totals["batches"] += 1
        self.totals["consumed"] += report.consumed
        self.totals["scored"] += report.scored
        self.totals["stored"] += report.stored
        self.totals["rejected"] += report.rejected
        self.totals["flagged"] += report.flagged
        self.totals["duplicates"] += report.duplicates
        log.debug(
            "batch of %d: %d scored, %d stored, %d rejected, %d flagged, %d duplicates in %.3fs",
            report.consumed, report.scored, report.stored, report.rejected, report.flagged, report.duplicates,
            report.seconds,
        )  # fmt: skip
