"""The Faust app: topics, the scoring agent, and the worker's HTTP endpoint (health, read-only SQL)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import faust
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver import Client

from finpulse.entities import EntityLinker
from finpulse.models import BatchScorer
from finpulse.schemas import OpinionIndex
from finpulse.settings import Settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.writer import ClickHouseWriter, WriteResult
from finpulse.streams import recovery, topics
from finpulse.streams.alerts import AlertService
from finpulse.streams.batches import process_whole
from finpulse.streams.guard import CommittedOffsetsWatch, OffsetGuard
from finpulse.streams.index_agent import IndexStage, ScoredBatchView, register_index_agents, sync_ticker_markets
from finpulse.streams.pipeline import ScoringPipeline
from finpulse.streams.produce import new_producer
from finpulse.streams.score import Columns
from finpulse.streams.validate import EventParser, RawMessage
from finpulse.streams.web import register_pages

log = logging.getLogger("finpulse.worker")


def faust_broker_urls(bootstrap_servers: str) -> list[str]:
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


@dataclass
class WorkerState:
    """What the worker loads once at start-up and the HTTP endpoint reports on."""

    settings: Settings
    bootstrap_servers: str
    query_client: Client | None = None
    pipeline: ScoringPipeline | None = None
    producer: AIOKafkaProducer | None = None
    index_stage: IndexStage | None = None
    alerts: AlertService | None = None
    model_version: str = ""
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _load(self) -> tuple[Client, BatchScorer, EntityLinker]:
        settings = self.settings
        client = get_client(settings.resolved_clickhouse_dsn)
        # Readers get a client of their own, so a slow dashboard query never holds up an insert.
        self.query_client = get_client(settings.resolved_clickhouse_dsn)
        applied = migrate(client)
        if applied:
            log.info("applied ClickHouse migrations: %s", ", ".join(applied))
        extra = [settings.entity_aliases_csv] if settings.entity_aliases_csv else []
        linker = EntityLinker.default(extra_csv=extra)
        sync_ticker_markets(client, linker)  # before any event is stored: the SQL index maps markets with it
        scorer = BatchScorer.load(settings.resolved_model_dir)
        return client, scorer, linker

    async def start(self) -> ScoringPipeline:
        client, scorer, linker = await asyncio.to_thread(self._load)
        self.producer = new_producer(self.bootstrap_servers)
        await self.producer.start()
        self.model_version = scorer.version
        retry_max_s = self.settings.clickhouse_retry_max_s
        writer = ClickHouseWriter(client, retry_max_s=retry_max_s)
        # the retrain and DLQ rows of a batch are inserted beside its scored rows, on a client of their own
        side_client = await asyncio.to_thread(get_client, self.settings.resolved_clickhouse_dsn)
        self.alerts = await AlertService.open(self.settings, client, writer, self.producer)
        on_stored = [self.index_stage.on_scored] if self.index_stage else []
        self.pipeline = ScoringPipeline(
            self.settings,
            EventParser(self.settings, linker),
            scorer,
            writer,
            self.producer,
            on_stored=[*on_stored, self._alert_on_scored],
            side_writer=ClickHouseWriter(side_client, retry_max_s=retry_max_s),
        )
        self.ready.set()
        log.info("worker ready: model %s, ClickHouse %s", scorer.version, _redacted(self.settings))
        return self.pipeline

    async def _alert_on_scored(self, rows: Columns, stored: WriteResult) -> None:
        assert self.alerts is not None
        await self.alerts.on_scored(rows)

    async def on_index_updates(self, updates: list[OpinionIndex], view: ScoredBatchView) -> None:
        if self.alerts is not None:
            await self.alerts.on_updates(updates, view)

    async def stop(self) -> None:
        if self.alerts is not None:
            await self.alerts.close()
        if self.producer is not None:
            await self.producer.stop()


def _redacted(settings: Settings) -> str:
    dsn = settings.resolved_clickhouse_dsn
    if "@" in dsn:
        scheme, _, rest = dsn.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return dsn


def create_app(settings: Settings, bootstrap_servers: str) -> tuple[faust.App, WorkerState]:
    recovery.apply()
    recovery.install_seek_delay()
    app = faust.App(
        settings.worker_id,
        broker=faust_broker_urls(bootstrap_servers),
        datadir=str(settings.data_dir / "faust"),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=True,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        web_tables_enabled=False,  # no table pages: the opinion index is read through SQL, behind the token
        web_router_enabled=False,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        stream_buffer_maxsize=max(4096, 2 * settings.batch_size),
        # One fetch round hands over at most a batch: Faust's drain loop blocks on a full stream buffer, and
        # a round of thousands of raw messages held the index agent's partials behind it until the raw
        # backlog was nearly gone (10+ s after a restart with a backlog). Smaller rounds let a full buffer
        # pause its partitions while the partials still flow.
        broker_max_poll_records=settings.batch_size,
        consumer_max_fetch_size=max(4 << 20, 2 * settings.max_message_bytes),
    )
    state = WorkerState(settings, bootstrap_servers)
    state.index_stage = register_index_agents(app, state, on_updates=state.on_index_updates)
    raw_topic = app.topic(
        settings.topic(topics.NEWS_RAW),
        settings.topic(topics.SOCIAL_RAW),
        key_serializer="raw",
        value_serializer="raw",
    )

    guard = OffsetGuard(app, what="scoring")

    @app.agent(raw_topic, name="score")
    async def score(stream: faust.StreamT) -> None:
        pipeline = await state.start()
        try:
            async for events in stream.take_events(settings.batch_size, within=settings.batch_max_wait_s):
                messages = [RawMessage.of(event.message) for event in events]
                await guard.check(messages)
                await process_whole(pipeline.process(messages), what="scoring")
                guard.advance(messages)
        finally:
            await state.stop()

    @app.on_partitions_assigned.connect
    async def _on_assigned(sender: object, assigned: set, **kwargs: object) -> None:
        guard.on_assigned(assigned)

    @app.task
    async def watch_committed_offsets() -> None:
        await CommittedOffsetsWatch(app, bootstrap_servers).run()

    register_pages(app, state)
    return app, state
