"""ClickHouse failing for a while: the batch waits and retries, then its rows land once, in the real chDB.

The failure is injected at the client boundary: a proxy around the real chDB client whose inserts raise
(or land and then raise, as when the connection drops before the reply). The outage ends after a given
number of failed inserts, not after a time, so every run goes through the same failures however fast
the machine is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from finpulse.demo import feed_messages
from finpulse.entities import EntityLinker
from finpulse.models import BatchScorer
from finpulse.settings import Settings
from finpulse.sinks.clickhouse import get_client
from finpulse.sinks.migrations import migrate
from finpulse.sinks.writer import ClickHouseWriter
from finpulse.streams import topics
from finpulse.streams.pipeline import ScoringPipeline
from finpulse.streams.produce import new_producer
from finpulse.streams.topics import ensure_topics
from finpulse.streams.validate import EventParser, RawMessage
from tests.integration.helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class FlakyClient:
    """The real client, except that the first ``outage_failures`` inserts fail; the first of them after
    landing when ``land_then_fail``. The outage ends with its last failed insert."""

    def __init__(self, client: object, *, outage_failures: int, land_then_fail: bool = False) -> None:
        self._client = client
        self.outage_failures = outage_failures
        self.land_then_fail = land_then_fail
        self.failed_inserts = 0

    def insert(self, *args: object, **kwargs: object) -> object:
        if self.failed_inserts < self.outage_failures:
            self.failed_inserts += 1
            if self.land_then_fail:
                self._client.insert(*args, **kwargs)
                self.land_then_fail = False
                raise OperationalError("connection reset after the insert was sent")
            raise OperationalError("Connection refused (injected outage)")
        return self._client.insert(*args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


@pytest.fixture(scope="module")
def real_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    client = get_client(f"chdb://{tmp_path_factory.mktemp('outage') / 'clickhouse'}")
    migrate(client)
    yield client
    client.close()  # chDB holds one data directory per process at a time


def raw_messages(settings: Settings, count: int, run_id: str) -> list[RawMessage]:
    now_ms = int(time.time() * 1000)
    return [
        RawMessage(settings.topic(m.topic), 0, offset, now_ms, m.record.key, m.record.value)
        for offset, m in enumerate(feed_messages("steady", count, seed=9, run_id=run_id))
    ]


async def _process_through_outage(
    settings: Settings, client: FlakyClient, batches: list[list[RawMessage]]
) -> None:
    await ensure_topics(settings, settings.broker)
    producer = new_producer(settings.broker)
    await producer.start()
    try:
        parser = EventParser(settings, EntityLinker.default())
        scorer = BatchScorer.load(settings.resolved_model_dir)
        pipeline = ScoringPipeline(
            settings, parser, scorer, ClickHouseWriter(client, retry_max_s=60), producer
        )
        for batch in batches:
            await pipeline.process(batch)
    finally:
        await producer.stop()


def count_rows(client: object, run_id: str) -> tuple[int, int]:
    rows = client.query(
        f"SELECT count(), uniqExact(event_id) FROM scored_events WHERE startsWith(source_id, '{run_id}-')"
    ).result_rows
    return int(rows[0][0]), int(rows[0][1])


def test_rows_arrive_once_clickhouse_is_back(pipeline_settings: Settings, real_client: object) -> None:
    flaky = FlakyClient(real_client, outage_failures=3)
    messages = raw_messages(pipeline_settings, 300, "outage")
    asyncio.run(_process_through_outage(pipeline_settings, flaky, [messages[:150], messages[150:]]))
    assert flaky.failed_inserts == 3  # the first batch waited out the whole outage
    assert count_rows(real_client, "outage") == (300, 300)
    published = read_topic(pipeline_settings.broker, pipeline_settings.topic(topics.EVENTS_SCORED), 300)
    assert len({json.loads(r.value)["event_id"] for r in published}) == 300


def test_an_insert_that_landed_before_the_error_is_not_written_twice(
    pipeline_settings: Settings, real_client: object
) -> None:
    # One failure: the retry finds the landed rows and has nothing left to insert.
    flaky = FlakyClient(real_client, outage_failures=1, land_then_fail=True)
    messages = raw_messages(pipeline_settings, 200, "ambiguous")
    # Then the same offsets again with other batch boundaries, as after a restart.
    asyncio.run(
        _process_through_outage(pipeline_settings, flaky, [messages, messages[50:120], messages[100:]])
    )
    assert flaky.failed_inserts == 1 and not flaky.land_then_fail  # it landed, then failed
    assert count_rows(real_client, "ambiguous") == (200, 200)
